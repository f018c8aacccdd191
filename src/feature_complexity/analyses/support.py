"""Support features: how much accuracy the many unimportant features hold together (paper Fig. 9).

Notation (docs/ARCHITECTURE.md): ``A`` penultimate activations ``(n_images, d)``, ``Z`` codes
``(n_images, k)``, ``decode(Z) ≈ A`` the dictionary's decoder, ``head`` the model's last layer,
``K`` complexity ``(k,)``, ``Γ`` importance ``(k,)`` (signed).

Features are kept in an order (the others' codes set to 0) and the head is scored on
``decode(Z ⊙ keep)``: top-1 accuracy for a fraction ``p`` of kept features, relative to the full
model's accuracy (``head(A)`` when ``A`` is given, else all features kept). The paper does not say
which order; four are computed: ``abs_importance`` (``|Γ|`` descending, the default reading),
``importance`` (``Γ`` descending: inhibitors last), ``complexity`` (``K`` ascending: simplest first)
and ``random`` (a seeded baseline).

The paper's finding ("a large ensemble of features individually of little importance … but
collectively holding a significant role") is summarised by the **support tail**: the relative
accuracy gained when the least important ``1 − tail_split`` of the features (by ``|Γ|``) are added
to the most important ``tail_split``; with the mean ``K`` of both parts, to test that the tail is
the complex part.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .._validation import as_array, writable

if TYPE_CHECKING:
    import torch
    from matplotlib.figure import Figure

__all__ = ["Support", "support_curves", "feature_orders", "ablated_logits", "columns", "support_figure"]

ORDERS = ("abs_importance", "importance", "complexity", "random")


@dataclass
class Support:
    """Result of :func:`support_curves`.

    Attributes:
        fractions: ``(n_p,)`` fractions of features kept.
        orders: ``{name: (k,) int}`` feature ids, kept first to last.
        accuracy: ``{name: (n_p,)}`` top-1 accuracy with ``round(p k)`` features kept.
        relative: ``{name: (n_p,)}`` ``accuracy / reference_accuracy``.
        reference_accuracy: accuracy of the full model (``reference == "model"``) or of every
            feature kept (``reference == "dictionary"``).
        reference: which of the two.
        tail_split: fraction of the features (by ``|Γ|``) counted as the head of the ranking.
        tail_gain: ``relative(all kept) − relative(top tail_split kept)`` by ``|Γ|``.
        head_mean_complexity, tail_mean_complexity: mean ``K`` of the top ``tail_split`` and of
            the rest.
        n_labelled: images with a known label that the accuracies count.
        correct_all, correct_head: ``(n_labelled,)`` 0/1 per labelled image: top-1 correct with
            every feature kept / with only the top ``tail_split`` by ``|Γ|`` (their mean
            difference is what the support tail adds; the findings bootstrap it over images).
    """

    fractions: np.ndarray
    orders: dict[str, np.ndarray]
    accuracy: dict[str, np.ndarray]
    relative: dict[str, np.ndarray]
    reference_accuracy: float
    reference: str
    tail_split: float
    tail_gain: float
    head_mean_complexity: float
    tail_mean_complexity: float
    n_labelled: int
    correct_all: np.ndarray | None = None
    correct_head: np.ndarray | None = None


def feature_orders(importance: np.ndarray, complexity: np.ndarray, *, seed: int = 0) -> dict[str, np.ndarray]:
    """``{name: (k,) feature ids}`` in keep order for each of :data:`ORDERS` (ties keep id order)."""
    G = np.asarray(importance, dtype=np.float64)
    K = np.asarray(complexity, dtype=np.float64)
    return {
        "abs_importance": np.argsort(-np.abs(G), kind="stable"),
        "importance": np.argsort(-G, kind="stable"),
        "complexity": np.argsort(K, kind="stable"),
        "random": np.random.default_rng(seed).permutation(G.size),
    }


def _logits(
    rows: Callable[[int, int], np.ndarray], n: int, head: Callable, batch_size: int, device: str | None
) -> np.ndarray:
    """``head`` on the penultimate vectors ``rows(a, b)`` of images ``a..b``, in batches: ``(n, n_classes)``."""
    import torch

    from ..features.fidelity import resolve_head_device

    dev, dtype = resolve_head_device(head, device)
    out = []
    with torch.no_grad():
        for a in range(0, n, batch_size):
            X = np.asarray(rows(a, min(a + batch_size, n)))
            logits = head(torch.as_tensor(writable(X), dtype=dtype, device=dev))
            if logits.ndim != 2 or logits.shape[0] != X.shape[0]:
                raise ValueError(f"head must map (batch, d) to logits (batch, n_classes); got {tuple(logits.shape)}")
            out.append(logits.detach().cpu().numpy().astype(np.float64))
    return np.concatenate(out) if out else np.zeros((0, 0))


def ablated_logits(
    Z: np.ndarray,
    keep: np.ndarray,
    decode: Callable[[np.ndarray], np.ndarray],
    head: Callable[["torch.Tensor"], "torch.Tensor"],
    *,
    batch_size: int = 4096,
    device: str | None = None,
) -> np.ndarray:
    """Logits ``(n_images, n_classes)`` of ``head(decode(Z ⊙ keep))``; ``keep`` ``(k,)`` bool."""
    # in the codes' own precision (float32 codes stay float32, as the pipeline scores them)
    mask = np.asarray(keep, dtype=Z.dtype if np.issubdtype(Z.dtype, np.floating) else np.float64)
    return _logits(lambda a, b: decode(Z[a:b] * mask), Z.shape[0], head, batch_size, device)


def support_curves(
    Z: np.ndarray,
    decode: Callable[[np.ndarray], np.ndarray],
    head: Callable[["torch.Tensor"], "torch.Tensor"],
    labels: np.ndarray,
    importance: np.ndarray,
    complexity: np.ndarray,
    *,
    A: np.ndarray | None = None,
    fractions: Sequence[float] | None = None,
    tail_split: float = 0.5,
    seed: int = 0,
    batch_size: int = 4096,
    device: str | None = None,
) -> Support:
    """Relative top-1 accuracy as features are kept in each order.

    Args:
        Z: ``(n_images, k)`` codes.
        decode: the dictionary's decoder, numpy ``(b, k) -> (b, d)`` (``Dictionary.decode``).
        head: penultimate vectors ``(b, d)`` (a torch tensor) to logits ``(b, n_classes)``; an
            ``nn.Module`` in eval mode (not moved).
        labels: ``(n_images,)`` true classes, ``-1`` for unknown (left out of the accuracies).
        importance: ``(k,)`` signed ``Γ``. complexity: ``(k,)`` ``K``.
        A: ``(n_images, d)`` penultimate activations, for the full model's accuracy; ``None``:
            the reference is every feature kept.
        fractions: kept fractions in ``[0, 1]``; default ``0, 0.05, …, 1``.
        tail_split: top fraction by ``|Γ|`` after which the support tail's gain is measured.
        seed: seed of the ``random`` order.
        batch_size, device: the head's forward passes.
    """
    Z = as_array(Z, "Z", 2, expected="(n_images, k)")  # no copy: Z may be a large memmap
    n, k = Z.shape
    y = as_array(labels, "labels", 1).astype(np.int64)
    G = np.asarray(importance, dtype=np.float64).reshape(-1)
    K = np.asarray(complexity, dtype=np.float64).reshape(-1)
    if y.shape[0] != n or G.size != k or K.size != k:
        raise ValueError(f"Z is {Z.shape}; labels need {n} values (got {y.shape[0]}), importance and "
                         f"complexity {k} (got {G.size}, {K.size})")
    known = y >= 0
    if not known.any():
        raise ValueError("no image has a known label (all -1); support curves need labelled images")
    p = np.linspace(0, 1, 21) if fractions is None else np.asarray(fractions, dtype=np.float64).reshape(-1)
    if p.size == 0 or not np.all((p >= 0) & (p <= 1)) or not 0 < tail_split < 1:
        raise ValueError(f"fractions must lie in [0, 1] and tail_split in (0, 1); got {list(p)}, {tail_split}")

    def correct(keep: np.ndarray) -> np.ndarray:
        logits = ablated_logits(Z, keep, decode, head, batch_size=batch_size, device=device)
        return (logits.argmax(axis=1)[known] == y[known]).astype(np.float64)

    def accuracy(keep: np.ndarray) -> float:
        return float(np.mean(correct(keep)))

    correct_all = correct(np.ones(k, dtype=bool))
    everything = float(np.mean(correct_all))
    if A is not None:
        reference, ref_acc = "model", _model_accuracy(A, n, head, batch_size, device, y, known)
    else:
        reference, ref_acc = "dictionary", everything
    orders = feature_orders(G, K, seed=seed)
    acc = {name: np.array([accuracy(_keep_top(o, f, k)) for f in p]) for name, o in orders.items()}
    rel = {name: a / ref_acc if ref_acc > 0 else np.full_like(a, np.nan) for name, a in acc.items()}
    head_part = _keep_top(orders["abs_importance"], tail_split, k)
    correct_head = correct(head_part)
    gain = (everything - float(np.mean(correct_head))) / ref_acc if ref_acc > 0 else float("nan")
    return Support(
        fractions=p, orders=orders, accuracy=acc, relative=rel, reference_accuracy=ref_acc, reference=reference,
        tail_split=float(tail_split), tail_gain=float(gain),
        head_mean_complexity=float(np.mean(K[head_part])) if head_part.any() else float("nan"),
        tail_mean_complexity=float(np.mean(K[~head_part])) if (~head_part).any() else float("nan"),
        n_labelled=int(known.sum()), correct_all=correct_all, correct_head=correct_head,
    )


def _keep_top(order: np.ndarray, frac: float, k: int) -> np.ndarray:
    """``(k,)`` bool mask of the first ``round(frac * k)`` features of ``order``."""
    keep = np.zeros(k, dtype=bool)
    keep[order[: int(round(frac * k))]] = True
    return keep


def _model_accuracy(A: np.ndarray, n: int, head: Callable, batch_size: int, device: str | None, y: np.ndarray,
                    known: np.ndarray) -> float:
    """Top-1 accuracy of ``head(A)`` (the full model) on the labelled images."""
    A = as_array(A, "A", 2, expected="(n_images, d)")
    if A.shape[0] != n:
        raise ValueError(f"A has {A.shape[0]} images but Z has {n}; they must describe the same images")
    ref = _logits(lambda a, b: A[a:b], n, head, batch_size, device)
    return float(np.mean(ref.argmax(axis=1)[known] == y[known]))


def columns(result: Support) -> dict[str, np.ndarray]:
    """Per-feature columns ``(k,)``: rank by ``|Γ|`` (0 = most important) and membership of the
    support tail (1.0 for the least important ``1 − tail_split``)."""
    order = result.orders["abs_importance"]
    k = order.size
    rank = np.empty(k, dtype=np.float64)
    rank[order] = np.arange(k)
    return {"importance_rank": rank, "support_tail": (rank >= round(result.tail_split * k)).astype(np.float64)}


def support_figure(result: Support) -> "Figure":
    """Relative accuracy against the share of features kept, one line per order (Fig. 9)."""
    from ..figures import new_figure

    fig = new_figure(6.0, 4.0)
    ax = fig.add_subplot()
    styles = {
        "abs_importance": ("most important first (|Γ|)", "#C44E52", "-"),
        "importance": ("most important first (signed Γ)", "#DD8452", "--"),
        "complexity": ("simplest first (K)", "#4C72B0", "-"),
        "random": ("random order", "#7F7F7F", ":"),
    }
    for name, rel in result.relative.items():
        label, color, ls = styles.get(name, (name, None, "-"))
        ax.plot(100 * result.fractions, rel, color=color, linestyle=ls, marker="o", markersize=3, label=label)
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.axvline(100 * result.tail_split, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xlabel("features kept (%)")
    ax.set_ylabel(f"top-1 accuracy / {'full model' if result.reference == 'model' else 'all features'}")
    ax.set_title(
        f"Support features: the bottom {100 * (1 - result.tail_split):.0f}% by |Γ| add "
        f"{100 * result.tail_gain:.1f}% of the reference accuracy\n(their mean K "
        f"{result.tail_mean_complexity:.2f}, top {100 * result.tail_split:.0f}%: {result.head_mean_complexity:.2f})",
        fontsize=9,
    )
    ax.legend(fontsize=8, loc="lower right")
    return fig


# ---------------------------------------------------------------------------------- the stage
def _compute(ctx: Any) -> Support:
    spec, d = ctx.inputs["spec"], ctx["dictionary"]
    acts = ctx["activations"]
    return support_curves(ctx["codes"], d.decode, spec.get(spec.head), np.asarray(acts.labels), ctx["importance"],
                          ctx["complexity"].score, A=acts.penultimate, seed=ctx.config.seed,
                          device=ctx.config.device)


def _figures(result: Support, ctx: Any) -> dict[str, Any]:
    from ..stages import FigureSpec

    return {"support": FigureSpec(
        support_figure(result), "Support features (paper Fig. 9)",
        "Top-1 accuracy of the head on the reconstruction from the kept features, relative to the model, as "
        "features are kept by importance (|Γ|, Γ), by complexity, or at random. The paper finds that the long "
        "tail of individually unimportant (mostly complex) features adds accuracy collectively.")}


def _applies(ctx: Any) -> bool:
    spec = ctx.inputs.get("spec")
    probe = ctx.inputs.get("probe")
    labelled = probe is None or bool((np.asarray(getattr(probe, "labels", [0])) >= 0).any())
    return (spec is None or spec.head is not None) and labelled


def _stage() -> Any:
    from ._stage import result_stage

    return result_stage("support", _compute, Support, needs=("activations", "dictionary", "codes", "importance",
                        "complexity"), settings=("seed",), inputs=("model",), applies=_applies,
                        section="importance", figures=_figures, columns=columns)


STAGE = _stage()
