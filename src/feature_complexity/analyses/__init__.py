"""Analyses built on the pipeline's outputs: dynamics (when), flow (where), meta-features (what)."""
