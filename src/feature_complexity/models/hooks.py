"""Forward hooks on a described model, owned by a context manager that always removes them.

:func:`capture` records, on every forward call of ``spec.module``, the probe points (the
residual stream after every block), the penultimate vector, the logits (models with a head) and,
optionally, the skip and main input of every residual addition (:attr:`ModelSpec.branches`).
:func:`pool` reduces a spatial map ``(b, C, H, W)`` or a token sequence ``(b, T, C)`` to
``(b, C)``, the way the spec says (class token, or mean of the patch tokens).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from .spec import ModelSpec

__all__ = ["capture", "pool"]


def pool(t: "torch.Tensor", *, tokens: str = "mean", prefix_tokens: int = 0) -> "torch.Tensor":
    """Pool one output to ``(batch, channels)``.

    ``(b, C, H, W)`` is averaged over space. ``(b, T, C)`` token sequences are read with
    ``tokens="cls"`` as their class token ``t[:, 0]``, with ``tokens="mean"`` as the mean of the
    patch tokens ``t[:, prefix_tokens:]`` (class / register / distillation tokens skipped). Both
    are linear in ``t``, so pooled branches add up to the pooled sum. ``(b, C)`` is returned as is.
    """
    if t.dim() == 4:
        return t.mean(dim=(2, 3))
    if t.dim() == 3:
        if tokens == "cls":
            return t[:, 0]
        if t.shape[1] <= prefix_tokens:
            raise ValueError(f"a sequence of {t.shape[1]} tokens has no patch tokens after the "
                             f"{prefix_tokens} prefix tokens; check ModelSpec.prefix_tokens")
        return t[:, prefix_tokens:].mean(dim=1)
    if t.dim() == 2:
        return t
    return t.flatten(1)


def _keeper(spec: "ModelSpec", pooled: bool) -> Callable[["torch.Tensor"], "torch.Tensor"]:
    """The function that turns a hooked tensor into what is recorded (pooled or raw, detached)."""
    reduce = partial(pool, tokens=spec.token_pool, prefix_tokens=spec.prefix_tokens)

    def keep(t: "torch.Tensor") -> "torch.Tensor":
        t = t.detach()
        if not pooled:
            return t.clone()
        out = reduce(t)
        # a view (2-d output, class token) shares memory with the forward pass: copy it, since a
        # later in-place operation (ResNet `out += identity`, LayerScale `mul_`) would change it
        return out.clone() if out.untyped_storage().data_ptr() == t.untyped_storage().data_ptr() else out

    return keep


@contextmanager
def capture(
    spec: "ModelSpec", *, branches: bool = False, pool: bool = True, layers: bool = True
) -> Iterator[dict[str, Any]]:
    """Hooks that record, on every forward call of ``spec.module``, into the yielded dict::

        {"layers": {probe: tensor}, "skip": {unit: tensor}, "main": {unit: tensor},
         "penultimate": tensor, "logits": tensor or None}

    With ``pool=True`` tensors are pooled to ``(batch, C)`` (see :func:`pool` and
    ``spec.token_pool``) and detached; with ``pool=False`` they are the raw outputs, cloned
    (ResNet blocks add the skip into the main branch's tensor in place, so an uncloned reference
    would change under us). ``logits`` stays ``None`` for a model without a head.

    Args:
        spec: the model description.
        branches: also record the skip and main input of every unit in ``spec.branches``. A skip
            with ``skip_from="previous"`` is the previous unit's ``skip + main``, filled in when
            the block returns (pooling is linear, so this holds pooled too).
        pool: pool outputs to ``(batch, C)``.
        layers: record the probe layers (turn off to record only penultimate and logits).
    """
    if branches and not spec.branches:
        raise ValueError(
            f"model '{spec.name}' does not describe its residual branches (spec.branches is "
            "empty); give BlockBranches for its blocks, or run without branch capture"
        )
    record: dict[str, Any] = {"layers": {}, "skip": {}, "main": {}, "penultimate": None, "logits": None}
    keep = _keeper(spec, pool)
    handles: list = []

    def output_hook(slot: str, name: str | None):
        def hook(_module, _inputs, output):
            if name is None:
                record[slot] = keep(output)
            else:
                record[slot][name] = keep(output)

        return hook

    def head_hook(_module, inputs, output):
        if spec.penultimate is None:
            record["penultimate"] = _keeper(spec, True)(inputs[0])
        record["logits"] = output.detach().clone()

    try:
        if layers:
            for name in spec.probe_layers:
                handles.append(spec.get(name).register_forward_hook(output_hook("layers", name)))
        if spec.head is not None:
            handles.append(spec.get(spec.head).register_forward_hook(head_hook))
        if spec.penultimate is not None:
            # the representation is always pooled: it is one vector per image, whatever `pool` says
            penult = _keeper(spec, True)
            handles.append(spec.get(spec.penultimate).register_forward_hook(
                lambda _m, _i, out: record.__setitem__("penultimate", penult(out))))
        if branches:
            handles += _branch_hooks(spec, record, keep, output_hook)
        yield record
    finally:
        for handle in handles:
            handle.remove()


def _branch_hooks(spec: "ModelSpec", record: dict[str, Any], keep: Callable, output_hook: Callable) -> list:
    """Hooks recording every unit's skip and main input; returns their handles."""
    handles = []
    chained: dict[str, list[tuple[str, str]]] = {}  # block -> [(unit, previous unit)]
    previous: str | None = None
    for unit, br in spec.branches.items():
        block = spec.unit_block(unit)
        handles.append(spec.get(br.main).register_forward_hook(output_hook("main", unit)))
        if br.skip is not None:
            handles.append(spec.get(br.skip).register_forward_hook(output_hook("skip", unit)))
        elif br.skip_from == "input":  # identity skip: the block's input
            handles.append(spec.get(block).register_forward_pre_hook(
                lambda _m, inputs, u=unit: record["skip"].__setitem__(u, keep(inputs[0]))))
        elif previous is not None:  # "previous": validated to be a unit of the same block, without post
            chained.setdefault(block, []).append((unit, previous))
        previous = unit

    def fill(pairs: list[tuple[str, str]]):
        def hook(_module, _inputs, _output):
            # in forward order, so a chain of three or more units is filled left to right
            for unit, prev in pairs:
                record["skip"][unit] = record["skip"][prev] + record["main"][prev]

        return hook

    for block, pairs in chained.items():
        handles.append(spec.get(block).register_forward_hook(fill(pairs)))
    return handles


pool_fn = pool  # capture() has a parameter named pool
