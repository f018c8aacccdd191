"""Forward hooks on a described model, owned by a context manager that always removes them.

:func:`capture` records, on every forward call of ``spec.module``, the probe points (the
residual stream after every block), the penultimate vector, the logits and, optionally, the skip
and main branch of every residual addition (:attr:`ModelSpec.branches`). :func:`pool` reduces a
spatial map ``(b, C, H, W)`` or a token sequence ``(b, T, C)`` to ``(b, C)``.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:
    import torch

    from .spec import ModelSpec

__all__ = ["capture", "pool"]


def pool(t: "torch.Tensor") -> "torch.Tensor":
    """Global average pooling to ``(batch, channels)``.

    ``(b, C, H, W)`` is averaged over space; ``(b, T, C)`` (token sequences) over tokens;
    ``(b, C)`` is returned as is.
    """
    if t.dim() == 4:
        return t.mean(dim=(2, 3))
    if t.dim() == 3:
        return t.mean(dim=1)
    if t.dim() == 2:
        return t
    return t.flatten(1)


@contextmanager
def capture(
    spec: "ModelSpec", *, branches: bool = False, pool: bool = True, layers: bool = True
) -> Iterator[dict[str, Any]]:
    """Hooks that record, on every forward call of ``spec.module``, into the yielded dict::

        {"layers": {name: tensor}, "skip": {name: tensor}, "main": {name: tensor},
         "penultimate": tensor, "logits": tensor}

    With ``pool=True`` tensors are pooled to ``(batch, C)`` and detached; with ``pool=False``
    they are the raw outputs, cloned (ResNet blocks add the skip into the main branch's tensor
    in place, so an uncloned reference would change under us).

    Args:
        spec: the model description.
        branches: also record the skip and main branch of every block in ``spec.branches``.
        pool: pool spatial outputs (see :func:`feature_complexity.activations.pool`).
        layers: record the probe layers (turn off to record only penultimate and logits).
    """
    if branches and not spec.branches:
        raise ValueError(
            f"model '{spec.name}' does not describe its residual branches (spec.branches is "
            "empty); give BlockBranches for its blocks, or run without branch capture"
        )
    record: dict[str, Any] = {"layers": {}, "skip": {}, "main": {}, "penultimate": None, "logits": None}
    _pool = pool_fn

    def keep(t: "torch.Tensor") -> "torch.Tensor":
        # copy whenever pooling returned the tensor itself (2-d outputs): a later in-place
        # operation of the forward pass must not change what was recorded
        if not pool:
            return t.detach().clone()
        pooled = _pool(t.detach())
        return pooled.clone() if pooled.data_ptr() == t.data_ptr() else pooled

    handles = []

    def output_hook(slot: str, name: str | None):
        def hook(_module, _inputs, output):
            value = keep(output)
            if name is None:
                record[slot] = value
            else:
                record[slot][name] = value

        return hook

    def input_hook(slot: str, name: str):
        def hook(_module, inputs):
            record[slot][name] = keep(inputs[0])

        return hook

    def head_hook(_module, inputs, output):
        if spec.penultimate is None:
            x = inputs[0].detach()
            record["penultimate"] = _pool(x) if x.dim() > 2 else x.clone()
        record["logits"] = output.detach().clone()

    try:
        if layers:
            for name in spec.probe_layers:
                handles.append(spec.get(name).register_forward_hook(output_hook("layers", name)))
        handles.append(spec.get(spec.head).register_forward_hook(head_hook))
        if spec.penultimate is not None:

            def penult_hook(_module, _inputs, output):
                record["penultimate"] = _pool(output.detach())

            handles.append(spec.get(spec.penultimate).register_forward_hook(penult_hook))
        if branches:
            for block, br in spec.branches.items():
                handles.append(spec.get(br.main).register_forward_hook(output_hook("main", block)))
                if br.skip is None:  # identity skip: the block's input
                    handles.append(spec.get(block).register_forward_pre_hook(input_hook("skip", block)))
                else:
                    handles.append(spec.get(br.skip).register_forward_hook(output_hook("skip", block)))
        yield record
    finally:
        for handle in handles:
            handle.remove()


pool_fn = pool  # capture() has a parameter named pool
