"""Features: the dictionary ``D (k, d)`` on the penultimate layer, the codes ``Z (n_images, k)``
of every image, and the fidelity of ``A ≈ decode(Z)``.

- :func:`fit_dictionary` — any registered :class:`DictionaryLearner` (NMF per class by default,
  Semi-NMF for signed activations, a TopK sparse autoencoder), returning a :class:`Dictionary`;
- :func:`encode` — exact non-negative least-squares codes of rows against a dictionary;
- :func:`fidelity` — reconstruction error and the head's accuracy on ``decode(Z)``.

Torch and scikit-learn are imported inside the functions, so importing this package is cheap.
"""

from __future__ import annotations

from .base import LEARNERS, Dictionary, DictionaryLearner, get_learner, register_learner
from .dictionary import fit_dictionary
from .fidelity import fidelity
from .nnls import encode, nnls_objective

__all__ = ["Dictionary", "DictionaryLearner", "LEARNERS", "encode", "fidelity", "fit_dictionary",
           "get_learner", "nnls_objective", "register_learner"]
