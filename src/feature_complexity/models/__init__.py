"""Model descriptions (:class:`ModelSpec`) and the built-in model families."""

from .spec import IMAGENET_MEAN, IMAGENET_STD, BlockBranches, ModelSpec

__all__ = ["BlockBranches", "ModelSpec", "IMAGENET_MEAN", "IMAGENET_STD"]
