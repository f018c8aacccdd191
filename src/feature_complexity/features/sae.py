"""TopK sparse autoencoder dictionaries (Gao et al. 2024, "Scaling and evaluating sparse
autoencoders", arXiv 2406.04093).

Notation (docs/ARCHITECTURE.md): ``A`` activations ``(n_samples, d)`` (any sign), ``D``
dictionary ``(k, d)`` with unit-norm atoms as rows, ``Z`` codes ``(n_samples, k)``:

    z = TopK(ReLU(W_enc (a − b_dec) + b_enc)),        â = z D + b_dec.

The codes are the encoder's output (at most ``top_k`` non-zero per image), not a least-squares
fit; ``decode`` adds ``b_dec`` (``Dictionary.extra["decoder_bias"]``, used by the contract's
default :meth:`~.base.DictionaryLearner.decode`). The encoder ``W_enc (k, d)``, ``b_enc (k,)``
and ``top_k`` are in ``Dictionary.extra`` and saved with the dictionary.

Training follows the paper: Adam on the mean squared error of ``â``; decoder rows kept at unit
norm (the gradient's component along each row is removed before the step and the rows are
renormalised after it); encoder initialised to the decoder's transpose; ``b_dec`` initialised to
the mean of ``A``; an auxiliary loss (AuxK, weight 1/32) that reconstructs the residual from the
``aux_k`` most active *dead* latents (no activation for ``dead_after`` samples), so that atoms do
not die. ``A`` is divided by one scalar (its RMS distance to the mean) while training, so the
defaults do not depend on the activations' scale; the stored weights are in ``A``'s units.
Deterministic for a seed on CPU (initialisation and batch order come from one generator).
Global scope only: a per-class SAE on ~1,000 images a class is not what the method is for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .._validation import as_array
from .base import Dictionary, DictionaryLearner, register_learner
from .nmf import make_dictionary, torch_device

if TYPE_CHECKING:  # torch is heavy; imported inside the functions that need it
    import torch

__all__ = ["SAELearner", "SAEOptions", "train_topk_sae", "topk_codes"]


@dataclass(frozen=True)
class SAEOptions:
    """Training options of the TopK SAE (defaults: Gao et al. where they transfer to small data).

    Attributes:
        top_k: non-zero codes per image; ``None``: ``max(1, min(32, k // 4))`` (32 as in the paper
            for large ``k``, a quarter of the atoms for small dictionaries).
        epochs: passes over ``A``.
        lr: Adam's learning rate (on activations scaled to unit RMS).
        batch_size: images per step (capped at ``n_samples``).
        aux_weight: weight of the AuxK loss (paper: 1/32); 0 turns it off.
        dead_after: a latent with no activation for this many samples is dead (for AuxK);
            ``None``: one epoch.
    """

    top_k: int | None = None
    epochs: int = 30
    lr: float = 1e-3
    batch_size: int = 1024
    aux_weight: float = 1 / 32
    dead_after: int | None = None

    def validate(self) -> "SAEOptions":
        """Raise ``ValueError`` naming the option and the fix."""
        for name in ("epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"SAE {name} must be >= 1, got {getattr(self, name)}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"SAE top_k must be >= 1 (or None for the default), got {self.top_k}")
        if not self.lr > 0:
            raise ValueError(f"SAE lr must be > 0, got {self.lr}")
        if not self.aux_weight >= 0:
            raise ValueError(f"SAE aux_weight must be >= 0, got {self.aux_weight}")
        return self


def topk_codes(A: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor, b_dec: torch.Tensor, top_k: int
               ) -> torch.Tensor:
    """``Z = TopK(ReLU((A − b_dec) W_encᵀ + b_enc))``, ``(n, k)``: the ``top_k`` largest
    pre-activations of each row kept (after the ReLU), the rest 0. Differentiable."""
    import torch

    pre = torch.relu((A - b_dec) @ W_enc.T + b_enc)
    top = torch.topk(pre, top_k, dim=1)
    return torch.zeros_like(pre).scatter(1, top.indices, top.values)


def _init_weights(A: torch.Tensor, k: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Unit-norm random atoms, the encoder tied to them, ``b_dec`` = mean of ``A``."""
    import torch

    d = A.shape[1]
    D = torch.randn(k, d, generator=gen, dtype=torch.float32).to(A.device)
    D = D / torch.linalg.vector_norm(D, dim=1, keepdim=True)
    weights = {"D": D, "W_enc": D.clone(), "b_enc": torch.zeros(k, device=A.device),
               "b_dec": A.mean(dim=0).to(torch.float32)}
    return {name: w.requires_grad_(True) for name, w in weights.items()}


def _aux_loss(residual: torch.Tensor, pre: torch.Tensor, D: torch.Tensor, dead: torch.Tensor, aux_k: int
              ) -> torch.Tensor:
    """AuxK: the squared error of the residual ``a − â`` reconstructed from the ``aux_k`` largest
    pre-activations of dead latents only (mean over the batch, as the main loss): it gives dead
    latents a gradient towards what the live ones miss."""
    import torch

    masked = torch.where(dead[None, :], pre, torch.zeros_like(pre))
    top = torch.topk(masked, aux_k, dim=1)
    z = torch.zeros_like(pre).scatter(1, top.indices, top.values)
    return (residual.detach() - z @ D).square().sum(1).mean()


def _step(w: dict[str, torch.Tensor], batch: torch.Tensor, top_k: int, opt: torch.optim.Optimizer,
          since: torch.Tensor, options: SAEOptions, dead_after: int) -> float:
    """One Adam step on a batch; updates ``since`` (samples since each latent last fired)."""
    import torch

    pre = torch.relu((batch - w["b_dec"]) @ w["W_enc"].T + w["b_enc"])
    top = torch.topk(pre, top_k, dim=1)
    z = torch.zeros_like(pre).scatter(1, top.indices, top.values)
    residual = batch - (z @ w["D"] + w["b_dec"])
    loss = residual.square().sum(1).mean()
    fired = (z > 0).any(dim=0)
    since += batch.shape[0]
    since[fired] = 0
    dead = since >= dead_after
    n_dead = int(dead.sum())
    if options.aux_weight > 0 and n_dead:
        aux_k = min(n_dead, max(1, batch.shape[1] // 2))
        loss = loss + options.aux_weight * _aux_loss(residual, pre, w["D"], dead, aux_k)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    with torch.no_grad():  # keep the atoms on the unit sphere: drop the radial part of the step
        D, g = w["D"], w["D"].grad
        assert g is not None  # D is a leaf of the loss: backward() just filled its grad
        g -= (g * D).sum(1, keepdim=True) * D
    opt.step()
    with torch.no_grad():
        w["D"] /= torch.linalg.vector_norm(w["D"], dim=1, keepdim=True).clamp(min=1e-12)
    return float(loss.detach())


def train_topk_sae(A: np.ndarray, k: int, *, seed: int = 0, options: SAEOptions = SAEOptions(),
                   device: str = "cpu", progress: bool = False) -> dict[str, np.ndarray]:
    """Train a TopK SAE with ``k`` latents on ``A (n, d)``.

    Returns:
        float32 arrays in ``A``'s units: ``D (k, d)`` unit rows, ``W_enc (k, d)``, ``b_enc (k,)``,
        ``b_dec (d,)``, and ``top_k`` (0-d int).
    """
    import torch

    options.validate()
    dev = torch_device(device)
    gen = torch.Generator().manual_seed(int(seed))
    X = torch.as_tensor(np.asarray(A, dtype=np.float32), device=dev)
    scale = float(torch.sqrt((X - X.mean(0)).square().sum(1).mean()).clamp(min=1e-12))
    X = X / scale  # unit RMS distance to the mean: the defaults (lr) do not depend on A's units
    top_k = options.top_k or max(1, min(32, k // 4))
    if top_k > k:
        raise ValueError(f"SAE top_k={top_k} is larger than the number of atoms k={k}; use top_k <= {k}")
    w = _init_weights(X, k, gen)
    opt = torch.optim.Adam(list(w.values()), lr=options.lr)
    batch = min(options.batch_size, X.shape[0])
    since = torch.zeros(k, dtype=torch.long, device=dev)
    dead_after = options.dead_after or X.shape[0]
    epochs: Any = range(options.epochs)
    if progress:
        from tqdm.auto import tqdm

        epochs = tqdm(epochs, desc="TopK SAE", unit="epoch")
    for _ in epochs:
        order = torch.randperm(X.shape[0], generator=gen).to(dev)
        for s in range(0, X.shape[0] - batch + 1, batch):  # full batches: same step size every time
            _step(w, X[order[s:s + batch]], top_k, opt, since, options, dead_after)
    out = {name: t.detach().cpu().numpy().astype(np.float32) for name, t in w.items()}
    out["b_enc"] *= scale  # ReLU and TopK commute with a positive scale (see the module docstring)
    out["b_dec"] *= scale
    out["top_k"] = np.array(top_k)
    return out


@register_learner("sae")
class SAELearner(DictionaryLearner):
    """TopK sparse autoencoder (global scope only); codes from its encoder.

    ``fit``'s ``max_iter`` does not apply: the training budget is ``options.epochs``.

    Args:
        options: :class:`SAEOptions` (``top_k``, ``epochs``, ``lr``, ``batch_size`` …).
    """

    scopes = ("global",)

    def __init__(self, options: SAEOptions | None = None) -> None:
        self.options = (options or SAEOptions()).validate()

    def fit(self, A: np.ndarray, classes: np.ndarray | None, *, scope: str, n_atoms_per_class: int,
            n_atoms: int | None, seed: int, max_iter: int, device: str, progress: bool) -> Dictionary:
        if scope != "global" or n_atoms is None:
            raise ValueError("the TopK SAE learns one global dictionary: use method='global' "
                             "(--dictionary global) with n_atoms (--n-atoms)")
        w = train_topk_sae(A, n_atoms, seed=seed, options=self.options, device=device, progress=progress)
        extra = {"encoder_weight": w["W_enc"], "encoder_bias": w["b_enc"], "decoder_bias": w["b_dec"],
                 "top_k": w["top_k"]}
        dic = make_dictionary(w["D"], np.full(n_atoms, -1), "global", None, 0.0, A, self.name, extra)
        R = A - self.decode(dic, self.encode(dic, A, device=device))
        dic.reconstruction_error = float(np.sqrt(np.sum(np.square(R, dtype=np.float64))
                                                 / max(np.sum(np.square(A, dtype=np.float64)), 1e-300)))
        return dic

    def encode(  # type: ignore[override]  # only these two options; others are a TypeError, as before
        self, dictionary: Dictionary, A: Any, *, device: str = "cpu", batch_size: int = 8192
    ) -> np.ndarray:
        """Encoder codes ``Z (n_images, k)`` float32, at most ``top_k`` non-zero per row.

        Args:
            dictionary: a dictionary made by this learner.
            A: ``(n_images, d)`` numpy array or torch tensor.
            device: where to run the encoder.
            batch_size: images per forward pass.
        """
        import torch

        A = as_array(A, "A", 2)
        missing = {"encoder_weight", "encoder_bias", "decoder_bias", "top_k"} - set(dictionary.extra)
        if missing:
            raise ValueError(f"dictionary has no SAE encoder ({sorted(missing)} missing from extra); "
                             "it was not made by the 'sae' learner")
        dev = torch_device(device)
        ex = {k: torch.as_tensor(np.asarray(v), device=dev) for k, v in dictionary.extra.items()}
        if A.shape[1] != ex["encoder_weight"].shape[1]:
            raise ValueError(f"A has {A.shape[1]} columns but the SAE was trained on d={ex['encoder_weight'].shape[1]}")
        out = np.empty((A.shape[0], dictionary.n_atoms), dtype=np.float32)
        with torch.no_grad():
            for s in range(0, A.shape[0], batch_size):
                a = torch.as_tensor(np.asarray(A[s:s + batch_size], dtype=np.float32), device=dev)
                out[s:s + a.shape[0]] = topk_codes(a, ex["encoder_weight"], ex["encoder_bias"], ex["decoder_bias"],
                                                   int(ex["top_k"])).cpu().numpy()
        return out
