"""Model registry: every family builds with exact probe/branch/head specs; checkpoints load
strictly with helpful errors; the ResNet-20 checkpoint reaches its known accuracy on CIFAR-10."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from feature_complexity.models.cifar_resnet import CIFAR10_CLASSES, OptionAShortcut
from feature_complexity.models.registry import (
    build_model,
    known_models,
    load_checkpoint,
    read_state_dict,
    spec_from_module,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
R20 = SHARED / "models" / "resnet20-cifar10.th"
needs_r20 = pytest.mark.skipif(not R20.is_file(), reason=f"ResNet-20 checkpoint not found at {R20}")

# (name, input size, n blocks, penultimate width, head, default classes); ImageNet models at 64 px
# to stay fast (their blocks are size-agnostic)
FAMILIES = [
    ("small-resnet", 32, 6, 64, "fc", 10),
    ("cifar-resnet20", 32, 9, 64, "linear", 10),
    ("resnet18", 64, 8, 512, "fc", 1000),
    ("resnet50", 64, 16, 2048, "fc", 1000),
]


def _randomise_bn(module: nn.Module, seed: int) -> None:
    """Random BN statistics and affine parameters, so that no branch is trivially zero (the small
    ResNet zero-initialises bn2) and the equality checks below can fail."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.randn(c, generator=g) * 0.3)
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)


@pytest.fixture(scope="module", params=FAMILIES, ids=[f[0] for f in FAMILIES])
def family(request):
    name, size, n_blocks, width, head, n_classes = request.param
    spec = build_model(name, seed=0)
    _randomise_bn(spec.module, seed=1)
    spec.module.eval()
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(2))
    return spec, x, n_blocks, width, head, n_classes


# ---------------------------------------------------------------------- structure
def _forward_then_remove(spec, x: torch.Tensor, handles: list) -> torch.Tensor:
    """The model's logits on ``x`` (no grad); the hooks ``handles`` are removed afterwards."""
    try:
        with torch.no_grad():
            return spec.module(x)
    finally:
        for h in handles:
            h.remove()


def test_known_models_cover_the_families():
    names = known_models()
    for n in ["resnet18", "resnet152", "wide_resnet50_2", "resnext101_64x4d", "cifar-resnet110", "small-resnet"]:
        assert n in names


def test_probe_layers_are_every_block_in_forward_order(family):
    spec, x, n_blocks, *_ = family
    order: list[str] = []
    handles = [spec.get(n).register_forward_hook(lambda m, i, o, n=n: order.append(n)) for n in spec.probe_layers]
    _forward_then_remove(spec, x, handles)
    assert order == spec.probe_layers
    assert len(spec.probe_layers) == n_blocks
    # every residual block of the model is probed, none missing
    blocks = [n for n, _ in spec.module.named_modules() if n.count(".") == 1 and n.startswith("layer")]
    assert sorted(blocks) == sorted(spec.probe_layers)
    assert spec.spatial == spec.probe_layers[-1]


def test_head_input_is_pooled_last_block(family):
    spec, x, _, width, head, n_classes = family
    seen: dict[str, torch.Tensor] = {}
    h1 = spec.get(head).register_forward_hook(lambda m, i, o: seen.update(inp=i[0].clone(), out=o.clone()))
    h2 = spec.get(spec.spatial).register_forward_hook(lambda m, i, o: seen.update(spatial=o.clone()))
    logits = _forward_then_remove(spec, x, [h1, h2])
    assert spec.head == head and spec.num_classes == n_classes
    assert logits.shape == (2, n_classes)
    assert seen["inp"].shape == (2, width)
    torch.testing.assert_close(seen["inp"], seen["spatial"].mean(dim=(2, 3)), rtol=0, atol=1e-6)
    torch.testing.assert_close(seen["out"], logits)


def test_branches_reconstruct_every_block_output(family):
    spec, x, *_ = family
    assert set(spec.branches) == set(spec.probe_layers)
    rec: dict[str, torch.Tensor] = {}

    def keep(key):
        # clone: torchvision adds the skip in place into bn2/bn3's output
        return lambda m, i, o: rec.__setitem__(key, o.clone())

    handles = []
    for block, br in spec.branches.items():
        handles.append(spec.get(block).register_forward_hook(keep(f"{block}:out")))
        handles.append(spec.get(block).register_forward_pre_hook(
            lambda m, i, b=block: rec.__setitem__(f"{b}:in", i[0].clone())))
        handles.append(spec.get(br.main).register_forward_hook(keep(f"{block}:main")))
        if br.skip is not None:
            handles.append(spec.get(br.skip).register_forward_hook(keep(f"{block}:skip")))
    _forward_then_remove(spec, x, handles)
    n_projected = 0
    for block, br in spec.branches.items():
        skip = rec[f"{block}:in"] if br.skip is None else rec[f"{block}:skip"]
        n_projected += br.skip is not None
        torch.testing.assert_close(br.post(skip + rec[f"{block}:main"]), rec[f"{block}:out"], rtol=0, atol=1e-6)
        # the check is sensitive: the main branch alone does not give the output
        assert (br.post(rec[f"{block}:main"]) - rec[f"{block}:out"]).abs().max() > 1e-3
    assert n_projected >= 2  # downsampling / option-A shortcuts were exercised too


def test_branch_modules_by_block_type():
    r50 = build_model("resnet50")
    assert r50.branches["layer1.0"].main == "layer1.0.bn3"
    assert r50.branches["layer1.0"].skip == "layer1.0.downsample"  # bottleneck widens 64 -> 256
    assert r50.branches["layer1.1"].skip is None
    r18 = build_model("resnet18")
    assert r18.branches["layer1.0"].main == "layer1.0.bn2" and r18.branches["layer1.0"].skip is None
    assert r18.branches["layer2.0"].skip == "layer2.0.downsample"
    c20 = build_model("cifar-resnet20")
    assert [b for b, br in c20.branches.items() if br.skip] == ["layer2.0", "layer3.0"]
    assert isinstance(c20.get("layer2.0.shortcut"), OptionAShortcut)
    sm = build_model("small-resnet")
    assert [b for b, br in sm.branches.items() if br.skip] == ["layer2.0", "layer3.0"]


def test_option_a_shortcut_against_pixel_loop():
    x = torch.randn(2, 4, 5, 6, generator=torch.Generator().manual_seed(0))
    out = OptionAShortcut(pad=2)(x)
    ref = torch.zeros(2, 8, 3, 3)
    for i in range(3):
        for j in range(3):
            ref[:, 2:6, i, j] = x[:, :, 2 * i, 2 * j]
    torch.testing.assert_close(out, ref, rtol=0, atol=0)


def test_cifar_layout_is_the_community_layout():
    """State-dict keys as in akamaster/pytorch_resnet_cifar10 (see ../shared/data/README.md)."""
    bn = ["weight", "bias", "running_mean", "running_var"]
    expected = ["conv1.weight"] + [f"bn1.{p}" for p in bn]
    for s in (1, 2, 3):
        for i in range(5):
            p = f"layer{s}.{i}"
            expected += [f"{p}.conv1.weight"] + [f"{p}.bn1.{q}" for q in bn]
            expected += [f"{p}.conv2.weight"] + [f"{p}.bn2.{q}" for q in bn]
    expected += ["linear.weight", "linear.bias"]
    keys = [k for k in build_model("cifar-resnet32").module.state_dict() if not k.endswith("num_batches_tracked")]
    assert keys == expected


@pytest.mark.parametrize(
    "name,n_params",
    # He et al. 2016 Table 6 / akamaster README (0.27M … 1.7M); torchvision's documented counts
    [("cifar-resnet20", 0.27e6), ("cifar-resnet32", 0.46e6), ("cifar-resnet44", 0.66e6),
     ("cifar-resnet56", 0.85e6), ("cifar-resnet110", 1.7e6), ("resnet18", 11_689_512), ("resnet50", 25_557_032)],
)
def test_parameter_counts_match_the_literature(name, n_params):
    n = sum(p.numel() for p in build_model(name).module.parameters())
    assert n == pytest.approx(n_params, rel=0.02)


def test_preprocessing_and_class_names():
    r18 = build_model("resnet18")
    assert (r18.input_size, r18.mean, r18.std) == (224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    c20 = build_model("cifar-resnet20")
    assert (c20.input_size, c20.mean, c20.std) == (32, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert c20.class_names == CIFAR10_CLASSES
    assert build_model("cifar-resnet20", num_classes=100).class_names is None
    sm = build_model("small-resnet", num_classes=3, class_names=["a", "b", "c"])
    assert (sm.input_size, sm.mean, sm.std, sm.class_names) == (32, (0.5,) * 3, (0.5,) * 3, ["a", "b", "c"])
    with pytest.raises(ValueError, match="2 class names for 3 classes"):
        build_model("small-resnet", num_classes=3, class_names=["a", "b"])


def test_small_resnet_is_configurable():
    spec = build_model("small-resnet", widths=(8, 12), blocks_per_stage=[1, 3], num_classes=4, stem_stride=2)
    assert spec.probe_layers == ["layer1.0", "layer2.0", "layer2.1", "layer2.2"]
    assert spec.module(torch.randn(1, 3, 32, 32)).shape == (1, 4)
    assert spec.get("fc").in_features == 12
    with pytest.raises(ValueError, match="blocks_per_stage"):
        build_model("small-resnet", widths=(8, 12), blocks_per_stage=[1, 2, 3])


def test_seeded_build_is_deterministic_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = build_model("small-resnet", seed=7).module.state_dict()
    assert torch.equal(torch.rand(3), expected_next)
    b = build_model("small-resnet", seed=7).module.state_dict()
    c = build_model("small-resnet", seed=8).module.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["conv1.weight"], c["conv1.weight"])


def test_build_args_rebuild_the_same_model():
    spec = build_model("small-resnet", widths=[8, 16], blocks_per_stage=3, num_classes=5, seed=3)
    assert spec.build_args == {"weights": None, "checkpoint": None, "num_classes": 5, "seed": 3,
                               "widths": [8, 16], "blocks_per_stage": 3, "in_channels": 3, "stem_stride": 1}
    again = build_model(spec.name, **spec.build_args)
    sa, sb = spec.module.state_dict(), again.module.state_dict()
    assert list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


# ---------------------------------------------------------------------- checkpoints
def _save_variants(tmp_path: Path, module: nn.Module) -> dict[str, Path]:
    sd = module.state_dict()
    prefixed = {f"module.{k}": v for k, v in sd.items()}
    files = {
        "raw": sd,
        "state_dict+module.": {"state_dict": prefixed, "best_prec1": 91.78},
        "model": {"model": sd, "epoch": 3},
    }
    paths = {}
    for key, obj in files.items():
        paths[key] = tmp_path / f"{key.replace('+', '_')}.pt"
        torch.save(obj, paths[key])
    # a pickled module needs full unpickling: only with trust_checkpoint=True
    paths["pickled module"] = tmp_path / "module.pt"
    torch.save(module, paths["pickled module"])
    return paths


def test_checkpoint_formats_load_and_infer_the_architecture(tmp_path):
    src = build_model("small-resnet", widths=(8, 16, 24), blocks_per_stage=1, num_classes=7, seed=0)
    _randomise_bn(src.module, seed=5)
    src.module.eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        want = src.module(x)
    for kind, path in _save_variants(tmp_path, src.module).items():
        # widths, blocks and classes come from the checkpoint; the seed differs on purpose
        trust = kind == "pickled module"
        if trust:  # never unpickled silently
            with pytest.raises(ValueError, match=r"safe loader.*--trust-checkpoint"):
                build_model("small-resnet", checkpoint=path)
        spec = build_model("small-resnet", checkpoint=path, seed=99, trust_checkpoint=trust)
        assert spec.num_classes == 7 and spec.build_args["widths"] == [8, 16, 24], kind
        assert not spec.module.training
        with torch.no_grad():
            torch.testing.assert_close(spec.module(x), want, rtol=0, atol=0, msg=kind)
        assert spec.build_args["checkpoint"] == str(path)


def test_torchvision_checkpoint_with_other_head(tmp_path):
    src = build_model("resnet18", num_classes=7, seed=0)
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.module.state_dict().items()}}, tmp_path / "r18.pth")
    spec = build_model("resnet18", checkpoint=tmp_path / "r18.pth")
    assert spec.num_classes == 7 and spec.class_names is None
    assert torch.equal(spec.get("fc").weight, src.get("fc").weight)


def test_mismatched_checkpoint_names_keys_and_suggests_the_model(tmp_path):
    path = tmp_path / "r20.th"
    state = build_model("cifar-resnet20").module.state_dict()
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    with pytest.raises(ValueError, match=r"missing key.*layer1\.3\.conv1\.weight.*3 stages of 3 basic blocks"
                                         r".*did you mean --model cifar-resnet20\?"):
        build_model("cifar-resnet32", checkpoint=path)
    with pytest.raises(ValueError, match=r"unexpected key.*layer1\.2.*did you mean --model cifar-resnet20"):
        build_model("small-resnet", widths=(16, 32, 64), blocks_per_stage=2, checkpoint=path)


def test_wrong_shapes_are_reported(tmp_path):
    path = tmp_path / "small.pt"
    torch.save(build_model("small-resnet", num_classes=10).module.state_dict(), path)
    target = build_model("small-resnet", num_classes=5).module
    with pytest.raises(ValueError, match=r"wrong shape.*fc\.weight: checkpoint \(10, 64\) vs model \(5, 64\)"):
        load_checkpoint(target, path, model_name="small-resnet")
    with pytest.raises(ValueError, match=r"did you mean --model small-resnet \(widths=\[8, 16\], blocks_per_stage=1\)"):
        torch.save(build_model("small-resnet", widths=(8, 16), blocks_per_stage=1).module.state_dict(), path)
        load_checkpoint(target, path, model_name="small-resnet")


def test_missing_and_unreadable_checkpoints(tmp_path):
    missing = tmp_path / "nope.th"
    with pytest.raises(FileNotFoundError, match="nope.th"):
        build_model("cifar-resnet20", checkpoint=missing)
    garbage = tmp_path / "garbage.th"
    garbage.write_bytes(b"this is not a checkpoint")
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        read_state_dict(garbage)
    not_weights = tmp_path / "meta.th"
    torch.save({"epoch": 3, "lr": 0.1}, not_weights)
    with pytest.raises(ValueError, match="without a state dict"):
        read_state_dict(not_weights)


@needs_r20
@pytest.mark.shared_data
def test_shared_resnet20_checkpoint_loads_and_is_rejected_by_resnet32():
    spec = build_model("cifar-resnet20", checkpoint=R20)
    assert spec.num_classes == 10 and spec.class_names == CIFAR10_CLASSES
    raw = torch.load(R20, map_location="cpu", weights_only=False)["state_dict"]
    assert torch.equal(spec.get("layer3.2.conv2").weight, raw["module.layer3.2.conv2.weight"])
    with pytest.raises(ValueError, match=r"cifar-resnet32.*did you mean --model cifar-resnet20\?"):
        build_model("cifar-resnet32", checkpoint=R20)


@needs_r20
@pytest.mark.slow
@pytest.mark.shared_data
def test_resnet20_accuracy_on_cifar10_jpeg_test_set():
    """81% on the JPEG copy of the test set (../shared/data/README.md), 91.78% on the PNG original."""
    from torchvision import datasets, transforms

    test_dir = SHARED / "cifar10" / "test"
    if not test_dir.is_dir():
        pytest.skip(f"CIFAR-10 test images not found at {test_dir}")
    spec = build_model("cifar-resnet20", checkpoint=R20)
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize(spec.mean, spec.std)])
    ds = datasets.ImageFolder(str(test_dir), transform=tf)
    assert ds.classes == spec.class_names and len(ds) == 10_000
    correct = 0
    with torch.inference_mode():
        for x, y in torch.utils.data.DataLoader(ds, batch_size=500, num_workers=0):
            correct += int((spec.module(x).argmax(1) == y).sum())
    assert 0.78 <= correct / len(ds) <= 0.85


# ---------------------------------------------------------------------- bad input
def test_unknown_model_lists_known_names():
    with pytest.raises(ValueError, match=r"unknown model 'resnet5'.*resnet18.*cifar-resnet20.*small-resnet"):
        build_model("resnet5")
    assert build_model("CIFAR_ResNet20").name == "cifar-resnet20"  # forgiving spelling


def test_wrong_weight_name_lists_valid_names():
    with pytest.raises(ValueError,
                       match=r"unknown weights 'IMAGENET1K_V9' for resnet50.*IMAGENET1K_V1, IMAGENET1K_V2, DEFAULT"):
        build_model("resnet50", weights="IMAGENET1K_V9")
    with pytest.raises(ValueError, match="only applies to torchvision models"):
        build_model("cifar-resnet20", weights="IMAGENET1K_V1")
    with pytest.raises(ValueError, match="not both"):
        build_model("resnet18", weights="IMAGENET1K_V1", checkpoint="x.pt")


def test_bad_family_arguments():
    with pytest.raises(ValueError, match=r"resnet18 takes no argument"):
        build_model("resnet18", widths=(8,))
    with pytest.raises(ValueError, match=r"takes no argument\(s\) \['depth'\]"):
        build_model("small-resnet", depth=3)
    with pytest.raises(ValueError, match="num_classes must be an integer >= 2"):
        build_model("small-resnet", num_classes=1)


def test_spec_from_module_infers_classes_and_rejects_wrong_names():
    r18 = build_model("resnet18", num_classes=12).module
    spec = spec_from_module(r18, probe_layers=["layer1.0", "layer4.1"], head="fc", name="mine")
    assert spec.num_classes == 12 and spec.build_args == {} and spec.input_size == 224
    with pytest.raises(ValueError, match=r"probe layer 'layer5\.0' not found.*layer1\.0, layer1\.1.*layer4\.1"):
        spec_from_module(r18, probe_layers=["layer1.0", "layer5.0"], head="fc")
    with pytest.raises(ValueError, match=r"head 'classifier' not found.*layer4\.1"):
        spec_from_module(r18, probe_layers=["layer1.0"], head="classifier")
    with pytest.raises(ValueError, match="pass num_classes"):
        spec_from_module(r18, probe_layers=["layer1.0"], head="avgpool")
    assert spec_from_module(r18, probe_layers="layer1.0", head="avgpool", num_classes=12).probe_layers == ["layer1.0"]


def test_importing_models_does_not_import_torch():
    code = "import sys, feature_complexity.models as m; m.known_models(); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_torchvision_weights_path_without_network(monkeypatch):
    """The weights branch, with torchvision's download replaced: categories become class names;
    a failed download gets a message that says what to do."""
    import urllib.error

    import torchvision.models._api as tv_api

    state = build_model("resnet18", seed=0).module.state_dict()
    monkeypatch.setattr(tv_api, "load_state_dict_from_url", lambda url, *a, **k: state)
    spec = build_model("resnet18", weights="IMAGENET1K_V1")
    assert spec.num_classes == 1000 and spec.class_names[:2] == ["tench", "goldfish"]
    assert torch.equal(spec.get("fc").weight, state["fc.weight"])
    assert spec.build_args["weights"] == "IMAGENET1K_V1"
    with pytest.raises(ValueError, match="1000-class head but num_classes=10"):
        build_model("resnet18", weights="IMAGENET1K_V1", num_classes=10)

    def offline(url, *a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(tv_api, "load_state_dict_from_url", offline)
    with pytest.raises(ValueError,
                       match=r"could not download torchvision weights resnet18\.IMAGENET1K_V1.*--checkpoint"):
        build_model("resnet18", weights="IMAGENET1K_V1")


def test_forced_num_classes_mismatch_points_to_the_checkpoint_head(tmp_path):
    path = tmp_path / "c20.th"
    torch.save(build_model("cifar-resnet20", num_classes=10).module.state_dict(), path)
    with pytest.raises(ValueError, match=r"linear\.weight: checkpoint \(10, 64\) vs model \(100, 64\)"
                                         r".*cifar-resnet20 with num_classes=10"):
        build_model("cifar-resnet20", checkpoint=path, num_classes=100)


@pytest.mark.parametrize("name,n_blocks", [("wide_resnet50_2", 16), ("resnext50_32x4d", 16), ("resnet34", 16)])
def test_other_torchvision_families_describe_every_block(name, n_blocks):
    spec = build_model(name)
    assert len(spec.probe_layers) == n_blocks and spec.probe_layers[-1] == "layer4.2"
    main = "bn2" if name == "resnet34" else "bn3"
    assert all(br.main == f"{b}.{main}" for b, br in spec.branches.items())
    assert [b for b, br in spec.branches.items() if br.skip] == (
        ["layer2.0", "layer3.0", "layer4.0"] if name == "resnet34" else ["layer1.0", "layer2.0", "layer3.0", "layer4.0"]
    )
