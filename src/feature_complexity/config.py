"""Every choice of a run, in one dataclass (defaults follow ``paper-method.md`` section 9).

Stages name the fields that change their result (:attr:`feature_complexity.stages.Stage.settings`);
the execution fields (device, batch size, workers) change where and how fast, never the numbers,
and are in no stage key. :meth:`RunConfig.validate` checks everything that can be checked before
the forward pass, with the CLI flag in each message.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = ["RunConfig", "EXECUTION_FIELDS", "CONTROLS"]

#: fields that never change a number (where and how fast the run goes)
EXECUTION_FIELDS = ("batch_size", "device", "num_workers", "memory_gb")
#: values of ``--nmf-solver`` (see :attr:`RunConfig.nmf_solver`)
NMF_SOLVERS = ("auto", "hals", "accelerated", "sklearn")
#: control runs the findings compare against (``--controls``)
CONTROLS = ("random-init",)


@dataclass
class RunConfig:
    """The configuration of a run.

    Attributes:
        dictionary: ``"per_class"`` (paper, CRAFT: a dictionary per class, stacked) or ``"global"``.
        learner: ``"auto"`` (NMF for non-negative activations, Semi-NMF for signed ones), ``"nmf"``,
            ``"semi_nmf"``, ``"sae"`` (TopK sparse autoencoder, global).
        n_atoms_per_class: atoms per class (paper: 10).
        n_atoms: atoms of a global dictionary (default ``n_atoms_per_class`` × classes).
        class_source: which images stand for a class: ``"label"``, ``"prediction"`` or ``"auto"``
            (the label where known, else the prediction).
        codes: ``"joint"`` (NNLS of every image against the whole ``D``; the paper's reading and
            the default) or ``"per_class"`` (against each class's block separately).
        fit_samples: what the dictionary is fitted on: ``"pooled"`` (one vector per image),
            ``"spatial"`` (every position of the penultimate map) or ``"crops"`` (CRAFT's crops).
        fit_per_class: at most this many fit images per class (``None``: all).
        fit_memory_gb: bound on the memory of the gathered fit samples.
        n_folds: folds of the held-out V-information estimate.
        alphas: relative ridge penalties searched by cross-validation (``None``: the engine's grid).
        ci_groups: test cells per fold for the confidence intervals of ``K`` and ``I_V``
            (delete-one-cell jackknife; 0 turns them off).
        confidence: level of every interval.
        n_bootstrap: bootstrap replicates of each finding's interval.
        controls: control runs for the findings (``"random-init"``).
        capture_branches: record skip/main branches for the flow analysis.
        teleport_threshold: share of a block output's ``I_V`` the skip must carry.
        robustness_sigmas, robustness_draws, robustness_images: the noise-sensitivity analysis.
        redundancy_keep, redundancy_masks: keep-fractions and masks per fraction (Nanda et al.).
        top_fraction, min_top, rank_by: the most important features whose mean ``K`` the dynamics
            follow (paper: the top 1 %; at least ``min_top``; ranked by ``|Γ|`` or signed ``Γ``).
        decodable_threshold: ``I_V`` at which a final feature counts as decodable from a checkpoint.
        superclasses: a class -> super-class table (a built-in name such as ``"cifar100"``,
            ``"imagenet"``, or a CSV path) for the purity of meta-features.
        evidence_features: features with precomputed evidence images (top images + heatmaps).
        evidence_visualize: features (of the evidence ones) with a MACO-style feature visualisation
            and the paper's Fig. 1B decoder visualisations (0: none; each costs an optimisation).
        visualize_steps: optimisation steps per visualisation.
        n_top: top images per feature.
        report_mb: size budget of the self-contained ``report.html``.
        seed: one seed for NMF, folds, bootstrap and anything random.
        nnls_max_iter, nnls_tol: the codes' NNLS solver.
        nmf_max_iter: iteration budget of each dictionary fit.
        nmf_solver: the NMF solver: ``"hals"`` (scikit-learn's coordinate-descent iterates),
            ``"accelerated"`` (several sweeps per pass over the samples, objective-based stop),
            ``"sklearn"`` (the reference, class by class), or ``"auto"``: accelerated when the fit
            has several samples per image (spatial positions, crops), else hals.
        batch_size, device, num_workers: the forward pass (execution only).
        memory_gb: working-memory budget of the complexity engine (execution only).
    """

    dictionary: str = "per_class"
    learner: str = "auto"
    n_atoms_per_class: int = 10
    n_atoms: int | None = None
    class_source: str = "auto"
    codes: str = "joint"
    fit_samples: str = "pooled"
    fit_per_class: int | None = None
    fit_memory_gb: float = 4.0
    n_folds: int = 5
    alphas: tuple[float, ...] | None = None
    ci_groups: int = 2
    confidence: float = 0.95
    n_bootstrap: int = 1000
    controls: tuple[str, ...] = ()
    capture_branches: bool = True
    teleport_threshold: float = 0.9
    robustness_sigmas: tuple[float, ...] = (0.01, 0.1, 0.5)
    robustness_draws: int = 100
    robustness_images: int = 2000
    redundancy_keep: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 0.9)
    redundancy_masks: int = 20
    superclasses: str | None = None
    top_fraction: float = 0.01
    min_top: int = 5
    rank_by: str = "abs"
    decodable_threshold: float = 0.5
    evidence_features: int = 300
    evidence_visualize: int = 0
    visualize_steps: int = 64
    n_top: int = 6
    report_mb: float = 25.0
    seed: int = 0
    nnls_max_iter: int = 1000
    nnls_tol: float = 1e-6
    nmf_max_iter: int = 1000
    nmf_solver: str = "auto"
    batch_size: int = 256
    device: str = "cpu"
    num_workers: int = 0
    memory_gb: float = 4.0

    def __post_init__(self) -> None:
        # tuples, not lists: the configuration is hashed into stage keys and compared
        for name in ("alphas", "controls", "robustness_sigmas", "redundancy_keep"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, tuple(value))

    def resolved_nmf_solver(self) -> str:
        """The NMF solver ``"auto"`` stands for with this fit set."""
        if self.nmf_solver != "auto":
            return self.nmf_solver
        return "hals" if self.fit_samples == "pooled" else "accelerated"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able (tuples as lists), for the manifest."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def validate(self) -> "RunConfig":
        """Raise ``ValueError`` naming the flag and the fix for any value that cannot work."""
        _choice("--dictionary", self.dictionary, ("per_class", "global"))
        _choice("--class-source", self.class_source, ("auto", "label", "prediction"))
        _choice("--codes", self.codes, ("joint", "per_class"))
        _choice("--fit-samples", self.fit_samples, ("pooled", "spatial", "crops"))
        _choice("--nmf-solver", self.nmf_solver, NMF_SOLVERS)
        _choice("--rank-by", self.rank_by, ("abs", "signed"))
        _at_least("--min-top", self.min_top, 1)
        if not 0 < self.top_fraction <= 1:
            raise ValueError(f"--top-fraction must be in (0, 1], got {self.top_fraction}")
        if not 0 < self.decodable_threshold <= 1:
            raise ValueError(f"--decodable-threshold must be in (0, 1], got {self.decodable_threshold}")
        _at_least("--atoms-per-class", self.n_atoms_per_class, 1)
        _at_least("--folds", self.n_folds, 2)
        _at_least("--batch-size", self.batch_size, 1)
        _at_least("--workers", self.num_workers, 0)
        _at_least("--ci-groups", self.ci_groups, 0)
        _at_least("--bootstrap", self.n_bootstrap, 0)
        _at_least("--evidence-features", self.evidence_features, 0)
        _at_least("--n-top", self.n_top, 1)
        _at_least("--visualize", self.evidence_visualize, 0)
        _at_least("--visualize-steps", self.visualize_steps, 1)
        _at_least("--robustness-images", self.robustness_images, 0)
        _at_least("--robustness-draws", self.robustness_draws, 2)
        if self.n_atoms is not None:
            _at_least("--n-atoms", self.n_atoms, 1)
        if self.fit_per_class is not None:
            _at_least("--fit-per-class", self.fit_per_class, 1)
        if not self.fit_memory_gb > 0:
            raise ValueError(f"--fit-memory must be a positive number of GB, got {self.fit_memory_gb}")
        if not 0 < self.confidence < 1:
            raise ValueError(f"--confidence must be in (0, 1), got {self.confidence}")
        if not 0 < self.teleport_threshold <= 1:
            raise ValueError(f"--threshold must be in (0, 1], got {self.teleport_threshold}")
        if self.alphas is not None and (not self.alphas or any(not a > 0 for a in self.alphas)):
            raise ValueError(f"alphas must be positive relative ridge penalties, got {list(self.alphas)}")
        unknown = [c for c in self.controls if c not in CONTROLS]
        if unknown:
            raise ValueError(f"--controls {', '.join(unknown)} is not known; use {', '.join(CONTROLS)}")
        if self.codes == "per_class" and self.dictionary != "per_class":
            raise ValueError("--codes per_class needs a per-class dictionary (--dictionary per_class)")
        if self.learner == "sae" and self.dictionary == "per_class":
            raise ValueError("the TopK SAE learns one global dictionary: add --dictionary global "
                             "(--n-atoms sets its size, default 10 per class)")
        return self


def _choice(flag: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{flag} must be one of {', '.join(allowed)}, got {value!r}")


def _at_least(flag: str, value: Any, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{flag} must be an integer >= {low}, got {value!r}")
