"""Figures (functions returning matplotlib Figures) and the self-contained HTML report."""
