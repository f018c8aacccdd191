"""Human names for the run folder's raw field names (``features.parquet`` columns and the like).

One table, :data:`COLUMNS`: ``column -> (label, explanation)``. The explorer shows the label and
puts the explanation in a tooltip; a column that is not in the table is still shown, with its
name made readable and a tooltip saying that it has no description yet (add a row here).
"""

from __future__ import annotations

__all__ = ["COLUMNS", "PATTERNS", "HIDDEN", "label", "explanation", "SECTIONS"]

#: column -> (label, explanation)
COLUMNS: dict[str, tuple[str, str]] = {
    "feature": ("feature", "Index of the feature: the row of the dictionary D and the column of the codes Z."),
    "class": ("class", "The class whose images the atom was extracted from (per-class dictionary)."),
    "class_name": ("class", "The class whose images the atom was extracted from."),
    "complexity": ("complexity K", "K = 1 − mean over blocks of the held-out V-information I_V(block → z): "
                   "near 0, the feature is linearly decodable from the first block on; near 1, only at the end."),
    "complexity_lo": ("K, lower bound", "Lower end of the confidence interval of K (jackknife over test cells)."),
    "complexity_hi": ("K, upper bound", "Upper end of the confidence interval of K (jackknife over test cells)."),
    "importance": ("importance Γ", "Signed importance for the feature's class: mean of code × gradient of the "
                   "class logit (gradient × input on the codes). Negative: the feature inhibits its class."),
    "abs_importance": ("|Γ|", "Magnitude of the importance, whatever its sign."),
    "inhibitor": ("inhibitor", "Γ < 0: the feature lowers its own class's logit."),
    "mean_code": ("mean code", "Average value of the feature's code z over the probe images (how often and how "
                  "strongly it fires)."),
    "teleport_depth": ("teleport depth", "First block from which the skip branch alone carries at least the "
                       "threshold share (default 90 %) of the feature's I_V at every later block. Equal to the "
                       "number of blocks: never (the last block's residual branch still adds to it)."),
    "skip_share": ("skip share", "Share of the block outputs' I_V carried by the skip branches, summed over "
                   "blocks: near 1, the feature rides the skip connections; low, the residual branches build it."),
    "cluster": ("meta-feature", "K-means cluster of the L2-normalised atom (meta-feature), numbered by "
                "increasing mean complexity."),
    "A": ("temporal decoding score A", "A = 1 − mean over training checkpoints of I_V(checkpoint → z): low, the "
          "feature was available early in training; high, it appeared late."),
    "first_decodable_epoch": ("first decodable (epoch)", "First epoch at which the feature is linearly decodable "
                              "from the penultimate layer with I_V ≥ ½."),
    "first_decodable": ("first decodable", "First training time (in the run's time unit) at which the feature is "
                        "linearly decodable from the checkpoint's penultimate layer with I_V ≥ ½; empty: never."),
    "first_decodable_step": ("first decodable (step)", "First training step at which I_V ≥ ½."),
    "redundancy": ("redundancy", "How much of the feature survives when units of the penultimate layer are "
                   "masked at random (Nanda et al.)."),
    "sensitivity": ("noise sensitivity", "How much the feature's code changes under Gaussian input noise."),
    "hoyer": ("Hoyer sparsity", "Hoyer sparsity of the atom: 1 = one unit, 0 = spread over all units."),
    "top_neuron_share": ("top-neuron share", "Share of the atom's energy ‖d‖² on its largest neuron (1 = a single "
                         "neuron carries the feature)."),
    "importance_rank": ("importance rank", "Rank of the feature by |Γ| among all features (0 = the most important)."),
    "support_tail": ("in the support tail", "1 for the least important features by |Γ| (beyond the head of the "
                     "ranking): the long tail whose joint contribution to accuracy the support analysis measures."),
}

#: column-name patterns (prefix -> label template, explanation template), for families of columns
PATTERNS: dict[str, tuple[str, str]] = {
    "redundancy_keep_": ("redundancy, {} of neurons kept", "CKA of the feature with the penultimate layer when only "
                         "a random fraction {} of its neurons is kept, over the CKA with the whole layer."),
    "noise_sensitivity_": ("noise sensitivity, σ = {}", "Variance of the feature's code under Gaussian pixel noise "
                           "of σ = {} (pixels in [0, 1]), over its variance across clean images."),
    "hierarchy_level_": ("hierarchy level {} cluster", "Sub-cluster of the feature at level {} of the recursive "
                         "K-means hierarchy of meta-features."),
}

#: columns used for layout only, never shown as values
HIDDEN = frozenset({"embed_x", "embed_y"})

#: the report's question sections: key -> (title, what the paper says)
SECTIONS: dict[str, tuple[str, str]] = {
    "what": ("What: features from simple to complex",
             "Complexity K = 1 − mean over blocks of the V-information I_V(block → z); the per-block I_V is the "
             "feature's decodability curve (paper §3, §7)."),
    "when": ("When: complexity across training",
             "Simple features are decodable early in training, complex ones later; important features get "
             "simpler over training (paper §6, Fig. 5–6)."),
    "where": ("Where: skip connections and residual branches",
              "Simple features are teleported to the last layer by the skip connections; complex ones are built "
              "by the residual branches (paper §5, Fig. 4)."),
    "importance": ("Importance: what the model relies on",
                   "Signed importance Γ of each feature for its class against its complexity K (paper §4)."),
}


def label(column: str) -> str:
    """The column's human label (a readable form of its name when it has no entry)."""
    if column in COLUMNS:
        return COLUMNS[column][0]
    if column.startswith("iv_"):
        return f"I_V from {column[3:]}"
    for prefix, (text, _) in PATTERNS.items():
        if column.startswith(prefix):
            return text.format(column[len(prefix):])
    return column.replace("_", " ")


def explanation(column: str) -> str:
    """What the column means, for a tooltip."""
    if column in COLUMNS:
        return COLUMNS[column][1]
    if column.startswith("iv_"):
        return f"Held-out V-information of the feature from block {column[3:]} (0 = not decodable, 1 = fully)."
    for prefix, (_, text) in PATTERNS.items():
        if column.startswith(prefix):
            return text.format(column[len(prefix):])
    return f"Column '{column}' of features.parquet (no description registered in report/labels.py yet)."
