"""Reading a run folder for the report: what is there, and a clear message for what is not.

The report reads files only (the run folder's contract, ``docs/ARCHITECTURE.md``); it never
imports the stages that wrote them, so it renders a folder on a machine without the model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["RunFolder", "check_run_dir"]


def check_run_dir(run_dir: str | Path) -> Path:
    """``run_dir`` as a path, or an error that says what to give instead.

    Raises:
        FileNotFoundError: the folder does not exist, or holds no ``features.parquet``.
        ValueError: ``run_dir`` is a file.
    """
    path = Path(run_dir)
    if not path.exists():
        raise FileNotFoundError(f"run folder {path} does not exist; give the --out folder of "
                                "`feature-complexity run` (or of the demo)")
    if not path.is_dir():
        raise ValueError(f"{path} is a file, not a run folder; give the folder that holds features.parquet "
                         "and manifest.json")
    if not (path / "features.parquet").exists():
        raise FileNotFoundError(f"{path / 'features.parquet'} not found: {path} is not a finished run folder; "
                                "finish the run first (rerun the same `feature-complexity run ... --out "
                                f"{path}` command: it resumes)")
    return path


@dataclass
class RunFolder:
    """A run folder, read lazily and forgivingly (a missing optional file is ``None``)."""

    path: Path

    def json(self, name: str) -> Any:
        """The parsed JSON file ``name`` (relative), or ``None`` when absent.

        Raises:
            ValueError: the file exists but is not JSON (a run interrupted by hand-editing, say).
        """
        path = self.path / name
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON ({err}); delete it and rerun the stage that writes "
                             "it (rerun the same `feature-complexity run` command)") from err

    def manifest(self) -> dict[str, Any]:
        data = self.json("manifest.json")
        return data if isinstance(data, dict) else {}

    def features(self) -> "pd.DataFrame":
        """``features.parquet`` sorted by feature id.

        Raises:
            ValueError: the table lacks ``feature`` or ``complexity``.
        """
        import pandas as pd

        path = self.path / "features.parquet"
        frame = pd.read_parquet(path)
        missing = [c for c in ("feature", "complexity") if c not in frame.columns]
        if missing:
            raise ValueError(f"{path} lacks the columns {missing}; it was not written by feature-complexity "
                             "(rerun the run to rewrite it)")
        return frame.sort_values("feature", kind="stable").reset_index(drop=True)

    def figure_index(self) -> dict[str, dict[str, Any]]:
        """``figures/index.json``: ``{name: {title, caption, section, stage}}`` (``{}`` when absent)."""
        data = self.json("figures/index.json")
        return dict(data) if isinstance(data, dict) else {}

    def figure_files(self) -> list[Path]:
        """Every ``figures/*.png``, sorted by name."""
        folder = self.path / "figures"
        return sorted(folder.glob("*.png")) if folder.is_dir() else []
