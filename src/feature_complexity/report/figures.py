"""Moved to :mod:`feature_complexity.figures` (figures are drawn by the stages, not the report).

Temporary re-export while the analyses move over; import from ``feature_complexity.figures``.
"""

from ..figures import *  # noqa: F401,F403
from ..figures import _new_figure, complexity_thirds  # noqa: F401
