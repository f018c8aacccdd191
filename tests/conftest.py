"""Shared fixtures: the location of ../shared/data and a tiny model that runs in milliseconds."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``make test`` runs ``-n auto``), one torch thread per worker, also in the
    CLI subprocesses the tests start: workers x threads stays at the number of cores."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"
        import torch

        torch.set_num_threads(1)


@pytest.fixture
def one_torch_thread():
    """One torch thread for a test (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``):
    on a shared 2-core machine torch's two spinning threads run tiny models 10-20x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; tests that use it skip with a reason when it is absent."""
    if not (SHARED_DATA / "cifar10").is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (CIFAR-10 JPEGs and the ResNet-20 checkpoint)")
    return SHARED_DATA


class TinyImages:
    """A map-style dataset of random images with labels, for fast pipeline tests."""

    def __init__(self, n: int = 64, size: int = 16, n_classes: int = 4, seed: int = 0):
        import torch

        g = torch.Generator().manual_seed(seed)
        self.images = torch.randn(n, 3, size, size, generator=g)
        self.labels_ = torch.randint(0, n_classes, (n,), generator=g)
        self.classes = [f"c{i}" for i in range(n_classes)]
        self.labels = self.labels_.numpy().astype(np.int64)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i], int(self.labels_[i])


@pytest.fixture
def tiny_images() -> TinyImages:
    return TinyImages()


@pytest.fixture
def tiny_spec():
    """A two-block residual CNN with BasicBlock-style branches, described by a ModelSpec."""
    return make_tiny_spec()


def make_tiny_spec():
    """The ``tiny_spec`` fixture's model, for use outside fixtures (subprocesses, scripts)."""
    import torch
    from torch import nn

    from feature_complexity.models.spec import BlockBranches, ModelSpec

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                               if stride != 1 or cin != cout else None)

        def forward(self, x):
            out = torch.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            out += x if self.downsample is None else self.downsample(x)
            return torch.relu(out)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, 1, 1)
            self.layer1 = nn.Sequential(Block(8, 8, 1), Block(8, 16, 2))
            self.fc = nn.Linear(16, 4)

        def forward(self, x):
            x = self.layer1(torch.relu(self.stem(x)))
            return self.fc(x.mean(dim=(2, 3)))

    torch.manual_seed(0)
    net = Net().eval()
    return ModelSpec(
        name="tiny", module=net, probe_layers=["layer1.0", "layer1.1"], head="fc", num_classes=4,
        input_size=16,
        branches={"layer1.0": BlockBranches(main="layer1.0.bn2", skip=None, post=torch.relu),
                  "layer1.1": BlockBranches(main="layer1.1.bn2", skip="layer1.1.downsample", post=torch.relu)},
    )
