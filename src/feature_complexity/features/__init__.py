"""Features: the dictionary ``D (k, d)`` of non-negative atoms on the penultimate layer, the codes
``Z (n_images, k)`` of every image, and the fidelity of ``A ≈ Z @ D``.

- :func:`fit_dictionary` — per-class NMF (the paper's default) or one global NMF.
- :func:`encode` — non-negative least squares codes: SciPy on the CPU, batched Lawson–Hanson
  in torch on a GPU (FISTA as an option).
- :func:`fidelity` — reconstruction error and the head's accuracy on ``Z @ D``.

Torch and scikit-learn are imported inside the functions, so importing this package is cheap.
"""

from __future__ import annotations

from .dictionary import Dictionary, fit_dictionary
from .fidelity import fidelity
from .nnls import encode, nnls_objective

__all__ = ["Dictionary", "encode", "fidelity", "fit_dictionary", "nnls_objective"]
