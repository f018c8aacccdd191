"""Class → super-class tables, for the super-class purity of meta-features (paper Fig. 13).

A table maps a class *index* (the index of the model's logit, as in ``Dictionary.feature_class``)
to a super-class name: ``dict[int, str]``. Classes absent from the table have no super-class.

Built in (package data beside this file; sources and licences in ``README.md``):

- ``"cifar100"``: CIFAR-100's 20 coarse labels, indices in torchvision's ``CIFAR100.classes`` order.
- ``"imagenet"``: the 1,000 ImageNet classes grouped by the BREEDS hierarchy (Santurkar et al.
  2021) at level 3 (29 groups: mammal, bird, reptile, garment, instrument …); ``"imagenet:L"``
  picks level ``L`` in 2–5. 110 classes that BREEDS leaves out have no super-class.

Or a CSV of your own with a ``class,superclass`` header (``#`` lines are comments), or a dict.
A class given by name is resolved through ``class_names`` (e.g. ``ImageSource.classes``).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path

__all__ = ["BUILTIN", "load_superclasses"]

#: built-in tables: name -> (file, super-class column)
BUILTIN = {"cifar100": ("cifar100.csv", "superclass"), "imagenet": ("imagenet_breeds.csv", "level_3")}
_IMAGENET_LEVELS = (2, 3, 4, 5)


def _read_rows(text: str, where: str) -> list[dict[str, str]]:
    """Rows of a CSV text whose ``#`` lines are comments."""
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    rows = list(csv.DictReader(io.StringIO("\n".join(lines))))
    if not rows:
        raise ValueError(f"{where} has no rows; it needs a 'class,superclass' header and one row per class")
    return rows


def _builtin_rows(source: str) -> tuple[list[dict[str, str]], str, str]:
    """``(rows, super-class column, name key columns)`` of a built-in table such as ``imagenet:4``."""
    name, _, level = source.partition(":")
    if name not in BUILTIN:
        raise ValueError(f"unknown built-in super-class table {source!r}; built in: {sorted(BUILTIN)}")
    fname, column = BUILTIN[name]
    if level:
        if name != "imagenet" or not level.isdigit() or int(level) not in _IMAGENET_LEVELS:
            raise ValueError(f"{source!r}: only 'imagenet:L' takes a level, with L in {_IMAGENET_LEVELS}")
        column = f"level_{level}"
    text = resources.files(__name__).joinpath(fname).read_text(encoding="utf-8")
    return _read_rows(text, fname), column, ("wnid" if name == "imagenet" else "name")


def load_superclasses(
    source: str | Path | Mapping[int | str, str],
    *,
    class_names: Sequence[str] | None = None,
) -> dict[int, str]:
    """Load a class → super-class table.

    Args:
        source: ``"cifar100"``, ``"imagenet"`` / ``"imagenet:L"`` (BREEDS level ``L`` in 2–5), a
            path to a CSV with ``class,superclass`` columns, or a dict ``{class: superclass}``;
            a class is an index or a name.
        class_names: the model's class names in logit order (``ImageSource.classes``). With a
            built-in table they select and reorder its rows (CIFAR-100 fine names; ImageNet
            WordNet ids, the ImageFolder folder names); with your own table they resolve names.

    Returns:
        ``{class index: super-class name}``; classes without a super-class are absent.
    """
    if isinstance(source, Mapping):
        pairs = [(str(c), str(s)) for c, s in source.items()]
        key_of_row = None
    elif isinstance(source, str) and source.split(":")[0] in BUILTIN:
        rows, column, key = _builtin_rows(source)
        pairs = [(r[key] if class_names is not None else r["class"], r[column]) for r in rows]
        key_of_row = key
    else:
        path = Path(source)
        if not path.is_file():
            raise ValueError(f"super-class table {str(source)!r} is not a file nor one of {sorted(BUILTIN)}")
        rows = _read_rows(path.read_text(encoding="utf-8"), str(path))
        if not {"class", "superclass"} <= set(rows[0]):
            raise ValueError(f"{path} needs columns 'class' and 'superclass'; found {list(rows[0])}")
        pairs = [(r["class"], r["superclass"]) for r in rows]
        key_of_row = None
    pairs = [(c.strip(), s.strip()) for c, s in pairs if s and s.strip()]  # empty = unassigned
    if class_names is None:
        if not all(c.lstrip("-").isdigit() for c, _ in pairs):
            raise ValueError("the table names its classes; pass class_names (the model's classes in logit order)")
        return {int(c): s for c, s in pairs}
    index = {str(n): i for i, n in enumerate(class_names)}
    table = {index[c]: s for c, s in pairs if c in index}
    if key_of_row is None:  # a table of the user's own may also give indices
        table.update({int(c): s for c, s in pairs if c not in index and c.isdigit()})
    if not table:
        what = f"its {key_of_row} column" if key_of_row else "its 'class' column"
        raise ValueError(
            f"none of the {len(class_names)} class names (e.g. {list(class_names)[:3]}) appear in {what}; "
            "check that the table belongs to this dataset"
        )
    return table
