"""Images inside the page: data URIs and the size budget of ``report.html``.

The report is one file that carries its own figures and thumbnails (a copied or mailed
``report.html`` shows no broken image). Figures are always embedded: they are few and they are the
report. Evidence thumbnails are embedded in priority order (the simplest, the most complex, the
most important features first) while the page stays under the budget; the others stay in the
run folder's ``evidence/`` and the page says so.
"""

from __future__ import annotations

import base64
import mimetypes
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["data_uri", "encoded_size", "Budget"]

_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml",
          ".webp": "image/webp", ".gif": "image/gif"}


def encoded_size(n_bytes: int) -> int:
    """Characters a file of ``n_bytes`` takes as base64 (what it costs the page)."""
    return 4 * ((n_bytes + 2) // 3)


def data_uri(path: Path) -> str:
    """``data:<type>;base64,…`` of an image file."""
    kind = _TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{kind};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


@dataclass
class Budget:
    """What is left of the page's size budget, in bytes.

    Attributes:
        limit: the whole page's budget (``config.report_mb`` megabytes).
        used: bytes already spent (the page's text, the figures, the thumbnails so far).
        refused: paths that did not fit.
    """

    limit: int
    used: int = 0
    refused: list[Path] = field(default_factory=list)

    @classmethod
    def of_megabytes(cls, mb: float) -> "Budget":
        if not mb > 0:
            raise ValueError(f"report_mb must be positive (the size budget of report.html), got {mb}")
        return cls(limit=int(mb * 1_000_000))

    def spend(self, n_bytes: int) -> None:
        """Count bytes that are in the page whatever the budget (its text, the figures)."""
        self.used += int(n_bytes)

    def take(self, path: Path) -> str | None:
        """The data URI of ``path`` when it still fits, else ``None`` (and ``path`` is remembered)."""
        cost = encoded_size(path.stat().st_size) + 40
        if self.used + cost > self.limit:
            self.refused.append(path)
            return None
        self.used += cost
        return data_uri(path)

    @property
    def over(self) -> bool:
        """Whether what must be in the page alone exceeds the budget."""
        return self.used > self.limit
