"""Model families beyond the ResNets: timm by name (ResNet, ConvNeXt, ViT, DeiT, DINOv2-style
backbones), torchvision's ConvNeXt / RegNet / ViT, token pooling, transformer residual units,
head-less models and per-position penultimate vectors.

Every model is randomly initialised and tiny (timm and torchvision take the sizes as keyword
arguments), so nothing is downloaded. Parameters that are zero or one at initialisation
(LayerScale, norms) are randomised, so a branch read at the wrong place cannot pass by accident.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
import torch
from torch import nn

from feature_complexity.models import build_model, spatial_tokens, spec_from_module
from feature_complexity.models.hooks import capture, pool
from feature_complexity.models.spec import BlockBranches, ModelSpec

timm = pytest.importorskip("timm")

TOL = dict(rtol=0, atol=1e-5)

# name, build kwargs, image side; each a few thousand to a few million parameters
TIMM_MODELS = {
    "resnet": ("timm:resnet18", dict(num_classes=5, model_kwargs=dict(layers=[1, 2, 1, 1])), 64),
    "resnet-bottleneck": ("timm:resnet50d", dict(num_classes=5, model_kwargs=dict(
        layers=[1, 1, 2, 1], drop_path_rate=0.1)), 64),
    "seresnet": ("timm:seresnet18", dict(num_classes=5, model_kwargs=dict(layers=[1, 1, 1, 1])), 64),
    "convnext": ("timm:convnext_tiny.fb_in22k_ft_in1k", dict(num_classes=5, model_kwargs=dict(
        depths=(1, 1, 2, 1), dims=(8, 16, 24, 32))), 64),
    "convnext-conv-mlp": ("timm:convnext_atto", dict(num_classes=5, model_kwargs=dict(
        depths=(1, 1, 2, 1), dims=(8, 16, 24, 32))), 64),
    "vit": ("timm:vit_tiny_patch16_224.augreg_in21k_ft_in1k", dict(num_classes=8, model_kwargs=dict(
        img_size=32, patch_size=4, depth=3, embed_dim=32, num_heads=2, init_values=0.5)), 32),
    "vit-avg": ("timm:vit_tiny_patch16_224", dict(num_classes=8, model_kwargs=dict(
        img_size=32, patch_size=8, depth=2, embed_dim=16, num_heads=2, global_pool="avg")), 32),
    "deit": ("timm:deit_small_patch16_224", dict(num_classes=6, model_kwargs=dict(
        img_size=32, patch_size=8, depth=2, embed_dim=16, num_heads=2)), 32),
    "dinov2-reg": ("timm:vit_small_patch14_reg4_dinov2.lvd142m", dict(model_kwargs=dict(
        img_size=28, depth=2, embed_dim=32, num_heads=2)), 28),
}
TRANSFORMERS = {"vit", "vit-avg", "deit", "dinov2-reg"}


def _randomise(module: nn.Module, seed: int) -> nn.Module:
    """Random norm statistics/affines and LayerScale gammas (which start at 1, 0 or 1e-5)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf in ("gamma", "layer_scale") or (p.ndim == 1 and ("norm" in name or "bn" in name or "ls" in name)):
                p.copy_(torch.rand(p.shape, generator=g) + 0.5 if leaf in ("weight", "gamma", "layer_scale")
                        else torch.randn(p.shape, generator=g) * 0.3)
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return module.eval()


def _make_timm(key: str) -> tuple[ModelSpec, int]:
    name, kwargs, size = TIMM_MODELS[key]
    spec = build_model(name, seed=0, **kwargs)
    _randomise(spec.module, seed=1)
    return spec, size


@pytest.fixture(scope="module", params=list(TIMM_MODELS), ids=list(TIMM_MODELS))
def timm_case(request):
    spec, size = _make_timm(request.param)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(2))
    return request.param, spec, x


def _tv_convnext() -> ModelSpec:
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt

    from feature_complexity.models.torchvision_other import convnext_spec

    cfg = [CNBlockConfig(8, 16, 1), CNBlockConfig(16, 24, 2), CNBlockConfig(24, None, 1)]
    return convnext_spec(_randomise(ConvNeXt(cfg, num_classes=5), 3), name="tv-convnext")


def _tv_vit() -> ModelSpec:
    from torchvision.models.vision_transformer import VisionTransformer

    from feature_complexity.models.torchvision_other import vit_spec

    net = VisionTransformer(image_size=32, patch_size=8, num_layers=3, num_heads=2, hidden_dim=16, mlp_dim=32,
                            num_classes=5)
    return vit_spec(_randomise(net, 4), name="tv-vit")


def _tv_regnet() -> ModelSpec:
    """A tiny RegNetY (SE, grouped convs; stages of 1, 1 and 3 blocks): regnet_y_400mf's
    blocks, at a fraction of its cost (it is built by name in the structure tests)."""
    from torchvision.models.regnet import BlockParams, RegNet

    from feature_complexity.models.torchvision_other import regnet_spec

    params = BlockParams.from_init_params(depth=5, w_0=8, w_a=8.0, w_m=2.0, group_width=8, se_ratio=0.25)
    return regnet_spec(_randomise(RegNet(params, num_classes=5, stem_width=8), 5), name="tv-regnet")


TV_MODELS = {"tv-convnext": (_tv_convnext, 64), "tv-vit": (_tv_vit, 32), "tv-regnet": (_tv_regnet, 32)}


def _make(key: str) -> tuple[ModelSpec, int]:
    if key in TV_MODELS:
        make, size = TV_MODELS[key]
        with torch.random.fork_rng(devices=[]):  # seeded, without touching the caller's stream
            torch.manual_seed(0)
            return make(), size
    return _make_timm(key)


@pytest.fixture(scope="module", params=[*TIMM_MODELS, *TV_MODELS], ids=[*TIMM_MODELS, *TV_MODELS])
def any_case(request):
    """Every timm and torchvision model of this file."""
    spec, size = _make(request.param)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(6))
    return request.param, spec, x


# ---------------------------------------------------------------------- reference hooks
def _forward_with(spec: ModelSpec, x: torch.Tensor, hooks: list[tuple[str, str, object]]) -> torch.Tensor:
    """Run the model with temporary hooks ``(module, "pre"|"post", fn)``; always removes them."""
    handles = []
    try:
        for module, kind, fn in hooks:
            m = spec.get(module)
            handles.append(m.register_forward_pre_hook(fn) if kind == "pre" else m.register_forward_hook(fn))
        with torch.no_grad():
            return spec.module(x)
    finally:
        for h in handles:
            h.remove()


def _mid_stream_module(spec: ModelSpec, block: str) -> str:
    """The module whose input is the stream between a transformer block's two additions."""
    return f"{block}.norm2" if f"{block}.norm2" in spec.module_names() else f"{block}.ln_2"


def _unit_outputs(spec: ModelSpec, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each unit's output, read independently of ``capture``: the block output for the last unit
    of a block, the input of the second norm for a transformer's attention unit."""
    seen: dict[str, torch.Tensor] = {}
    hooks = []
    units_of: dict[str, list[str]] = {}
    for unit in spec.branches:
        units_of.setdefault(spec.unit_block(unit), []).append(unit)
    for block, units in units_of.items():
        hooks.append((block, "post", lambda m, i, o, u=units[-1]: seen.__setitem__(u, o.detach().clone())))
        if len(units) == 2:
            hooks.append((_mid_stream_module(spec, block), "pre",
                          lambda m, i, u=units[0]: seen.__setitem__(u, i[0].detach().clone())))
    _forward_with(spec, x, hooks)
    return seen


def reconstruction_error(spec: ModelSpec, x: torch.Tensor) -> float:
    """Largest |post(skip + main) - unit output| over every unit, raw tensors (inf when the
    shapes do not even match)."""
    want = _unit_outputs(spec, x)
    with capture(spec, branches=True, pool=False) as rec, torch.no_grad():
        spec.module(x)
    worst = 0.0
    for unit, br in spec.branches.items():
        skip, main = rec["skip"][unit], rec["main"][unit]
        if skip.shape != main.shape or main.shape != want[unit].shape:
            return float("inf")
        got = br.post(skip + main) if br.post is not None else skip + main
        worst = max(worst, float((got - want[unit]).abs().max()))
    return worst


# ---------------------------------------------------------------------- names and imports
def test_listing_models_imports_neither_torch_nor_timm():
    code = ("import sys, feature_complexity, feature_complexity.models as m; names = m.known_models(); "
            "assert 'timm:<name>' in names and 'vit_b_16' in names and 'regnet_y_400mf' in names, names; "
            "assert 'timm' not in sys.modules and 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_torchvision_names_exist_in_torchvision():
    import torchvision

    from feature_complexity.models.torchvision_other import TORCHVISION_OTHER

    assert set(TORCHVISION_OTHER) <= set(torchvision.models.list_models())


def test_timm_models_build_by_name(timm_case):
    key, spec, x = timm_case
    name, kwargs, _ = TIMM_MODELS[key]
    assert spec.name == name and spec.build_args["model_kwargs"] == kwargs["model_kwargs"]
    assert spec.branches, "every family here has a residual description"
    again = build_model(spec.name, **spec.build_args)  # the recorded arguments rebuild it
    sa, sb = build_model(name, seed=0, **kwargs).module.state_dict(), again.module.state_dict()
    assert list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


# ---------------------------------------------------------------------- probe points
def _block_types() -> tuple[type, ...]:
    from timm.models.convnext import ConvNeXtBlock
    from timm.models.resnet import BasicBlock, Bottleneck
    from timm.models.vision_transformer import Block
    from torchvision.models.convnext import CNBlock
    from torchvision.models.regnet import ResBottleneckBlock
    from torchvision.models.vision_transformer import EncoderBlock

    return BasicBlock, Bottleneck, ConvNeXtBlock, Block, CNBlock, ResBottleneckBlock, EncoderBlock


def test_probe_points_are_every_block_in_call_order(any_case):
    _, spec, x = any_case
    calls: list[str] = []
    # hooks on every module, so the order is the order in which blocks actually run
    hooks = [(n, "post", lambda m, i, o, n=n: calls.append(n)) for n in spec.module_names()]
    _forward_with(spec, x, hooks)
    assert [c for c in calls if c in set(spec.probe_layers)] == spec.probe_layers  # each once, in order
    blocks = [n for n, m in spec.module.named_modules() if isinstance(m, _block_types())]
    assert sorted(blocks) == sorted(spec.probe_layers)


def test_units_are_in_forward_order(any_case):
    _, spec, x = any_case
    first_call: dict[str, int] = {}
    hooks = [(br.main, "post", lambda m, i, o, u=u: first_call.setdefault(u, len(first_call)))
             for u, br in spec.branches.items()]
    _forward_with(spec, x, hooks)
    assert sorted(first_call, key=first_call.get) == list(spec.branches)


# ---------------------------------------------------------------------- penultimate and head
def test_head_of_penultimate_gives_the_logits(any_case):
    _, spec, x = any_case
    with capture(spec) as rec, torch.no_grad():
        logits = spec.module(x)
    if spec.head is None:
        assert rec["logits"] is None and spec.num_classes is None
        return
    with torch.no_grad():
        torch.testing.assert_close(spec.get(spec.head)(rec["penultimate"]), logits, **TOL)
    assert rec["penultimate"].shape == (2, spec.get(spec.head).in_features)


def test_timm_penultimate_is_forward_head_pre_logits(timm_case):
    """An independent path: timm's own pre-logits features (pooled, normed)."""
    _, spec, x = timm_case
    with capture(spec, layers=False) as rec, torch.no_grad():
        spec.module(x)
        ref = spec.module.forward_head(spec.module.forward_features(x), pre_logits=True)
    torch.testing.assert_close(rec["penultimate"], ref, **TOL)


def test_penultimate_module_fires_once(timm_case):
    _, spec, x = timm_case
    calls = []
    target = spec.penultimate or spec.head
    _forward_with(spec, x, [(target, "post", lambda m, i, o: calls.append(1))])
    assert len(calls) == 1


# ---------------------------------------------------------------------- residual units
def test_skip_plus_main_reproduces_every_unit(any_case):
    key, spec, x = any_case
    assert reconstruction_error(spec, x) < 1e-5
    if key in TRANSFORMERS | {"tv-vit"}:
        assert len(spec.branches) == 2 * len(spec.probe_layers)
        assert all(br.skip_from == ("input" if u.endswith(".attn") else "previous") for u, br in spec.branches.items())


def test_transformer_units_in_detail(timm_case):
    """ViT: skip(attn) = block input, skip(mlp) = stream between the additions = skip + main of
    attn, and skip(mlp) + main(mlp) = block output."""
    key, spec, x = timm_case
    if key not in TRANSFORMERS:
        pytest.skip("transformers only")
    seen: dict[str, torch.Tensor] = {}
    hooks = []
    for b in spec.probe_layers:
        hooks += [(b, "pre", lambda m, i, b=b: seen.__setitem__(f"{b}:in", i[0].clone())),
                  (b, "post", lambda m, i, o, b=b: seen.__setitem__(f"{b}:out", o.clone())),
                  (f"{b}.norm2", "pre", lambda m, i, b=b: seen.__setitem__(f"{b}:mid", i[0].clone()))]
    _forward_with(spec, x, hooks)
    with capture(spec, branches=True, pool=False) as rec, torch.no_grad():
        spec.module(x)
    for b in spec.probe_layers:
        a, m = f"{b}.attn", f"{b}.mlp"
        torch.testing.assert_close(rec["skip"][a], seen[f"{b}:in"], **TOL)
        torch.testing.assert_close(rec["skip"][a] + rec["main"][a], seen[f"{b}:mid"], **TOL)
        torch.testing.assert_close(rec["skip"][m], seen[f"{b}:mid"], **TOL)
        torch.testing.assert_close(rec["skip"][m] + rec["main"][m], seen[f"{b}:out"], **TOL)
        torch.testing.assert_close(rec["layers"][b], seen[f"{b}:out"], **TOL)
        assert (rec["main"][a].abs().mean() > 1e-3) and (rec["main"][m].abs().mean() > 1e-3)


def _same_shape_pair(spec: ModelSpec, x: torch.Tensor) -> tuple[str, str]:
    """Two consecutive units whose outputs have the same shape (so swapping them is not a
    shape error but a wrong value)."""
    with capture(spec, branches=True, pool=False) as rec, torch.no_grad():
        spec.module(x)
    units = list(spec.branches)
    return next((a, b) for a, b in zip(units, units[1:]) if rec["main"][a].shape == rec["main"][b].shape)


def _mutations(key: str, spec: ModelSpec, x: torch.Tensor) -> dict[str, dict[str, BlockBranches]]:
    """Wrong descriptions that a sound check must reject."""
    units = list(spec.branches)
    out: dict[str, dict[str, BlockBranches]] = {}
    a, b = _same_shape_pair(spec, x)
    out["swapped mains"] = {**spec.branches, a: dataclasses.replace(spec.branches[a], main=spec.branches[b].main),
                            b: dataclasses.replace(spec.branches[b], main=spec.branches[a].main)}
    if key in ("vit", "tv-vit"):
        b = spec.probe_layers[0]
        before_ls = "attn" if key == "vit" else "self_attention"
        if key == "vit":  # LayerScale dropped: main read at the attention output, before ls1
            attn = dataclasses.replace(spec.branches[f"{b}.attn"], main=f"{b}.{before_ls}")
            out["no LayerScale"] = {**spec.branches, f"{b}.attn": attn}
        mlp = dataclasses.replace(spec.branches[f"{b}.mlp"], skip_from="input")
        out["mlp skip = block input"] = {**spec.branches, f"{b}.mlp": mlp}
    if key in ("convnext", "tv-convnext"):
        b = spec.probe_layers[0]
        inner = "mlp" if key == "convnext" else "block"  # before the LayerScale multiply
        out["no LayerScale"] = {**spec.branches, b: dataclasses.replace(spec.branches[b], main=f"{b}.{inner}")}
    if key in ("resnet", "tv-regnet"):
        b = next(u for u, br in spec.branches.items() if br.skip is not None)
        out["projection ignored"] = {**spec.branches, b: dataclasses.replace(spec.branches[b], skip=None)}
        out["no post"] = {**spec.branches, units[0]: dataclasses.replace(spec.branches[units[0]], post=None)}
    return out


@pytest.mark.parametrize("key", ["vit", "convnext", "resnet", "tv-vit",
                                 pytest.param("tv-convnext", marks=pytest.mark.slow),
                                 pytest.param("tv-regnet", marks=pytest.mark.slow)])
def test_reconstruction_check_catches_wrong_descriptions(key, request):
    """The check above can fail: each deliberate mistake gives a large error."""
    spec, size = _make(key)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(7))
    assert reconstruction_error(spec, x) < 1e-5
    for what, branches in _mutations(key, spec, x).items():
        wrong = dataclasses.replace(spec, branches=branches)
        assert reconstruction_error(wrong, x) > 1e-3, what


# ---------------------------------------------------------------------- pooling
def test_token_pool_default_follows_the_head():
    cases = {"vit": ("cls", 1), "vit-avg": ("mean", 1), "deit": ("cls", 1), "dinov2-reg": ("cls", 5),
             "resnet": ("mean", 0), "convnext": ("mean", 0)}
    for key, (tokens, prefix) in cases.items():
        name, kwargs, _ = TIMM_MODELS[key]
        spec = build_model(name, seed=0, **kwargs)
        assert (spec.token_pool, spec.prefix_tokens) == (tokens, prefix), key
    name, kwargs, _ = TIMM_MODELS["vit"]
    assert build_model(name, token_pool="mean", **kwargs).token_pool == "mean"
    with pytest.raises(ValueError, match="token_pool='cls' needs a class token"):
        build_model("timm:resnet18", token_pool="cls", num_classes=5, model_kwargs=dict(layers=[1, 1, 1, 1]))


def test_pooled_tokens_skip_prefix_tokens(timm_case):
    key, spec, x = timm_case
    if key not in TRANSFORMERS:
        pytest.skip("transformers only")
    with capture(spec, branches=True, pool=False) as raw, torch.no_grad():
        spec.module(x)
    for mode in ("cls", "mean"):
        s = dataclasses.replace(spec, token_pool=mode)
        with capture(s, branches=True) as rec, torch.no_grad():
            s.module(x)
        for b in s.probe_layers:
            t = raw["layers"][b]
            ref = t[:, 0] if mode == "cls" else t[:, s.prefix_tokens:].mean(dim=1)
            torch.testing.assert_close(rec["layers"][b], ref, **TOL)
        for u in s.branches:  # pooling is linear: pooled skip + main is the pooled sum
            total = raw["skip"][u] + raw["main"][u]
            ref = total[:, 0] if mode == "cls" else total[:, s.prefix_tokens:].mean(dim=1)
            torch.testing.assert_close(rec["skip"][u] + rec["main"][u], ref, **TOL)


def test_pool_reference_values():
    t = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    torch.testing.assert_close(pool(t, tokens="cls"), t[:, 0])
    torch.testing.assert_close(pool(t, tokens="mean", prefix_tokens=2), (t[:, 2] + t[:, 3]) / 2)
    torch.testing.assert_close(pool(t), t.mean(dim=1))
    with pytest.raises(ValueError, match="no patch tokens"):
        pool(t, prefix_tokens=4)


# ---------------------------------------------------------------------- models without a head
def test_headless_backbone(timm_case):
    key, spec, x = timm_case
    if key != "dinov2-reg":
        pytest.skip("the head-less case")
    assert spec.head is None and spec.num_classes is None and spec.penultimate == "head"
    assert spec.build_args["num_classes"] == 0 and spec.class_names is None
    assert "no classification head" in spec.describe()["representation"]
    with capture(spec) as rec, torch.no_grad():
        out = spec.module(x)
    assert rec["logits"] is None
    torch.testing.assert_close(rec["penultimate"], out, **TOL)  # forward() of a backbone is its features


def test_num_classes_zero_drops_the_head_and_only_for_timm():
    spec = build_model("timm:resnet18", num_classes=0, model_kwargs=dict(layers=[1, 1, 1, 1]))
    assert spec.head is None and spec.penultimate == "fc" and spec.describe()["num_classes"] is None
    with pytest.raises(ValueError, match="num_classes=0 .* is for timm"):
        build_model("resnet18", num_classes=0)
    with pytest.raises(ValueError, match=r"num_classes must be an integer >= 2 \(or 0"):
        build_model("timm:resnet18", num_classes=1)


def test_spec_validation_of_heads_and_units(tiny_spec):
    net = tiny_spec.module
    with pytest.raises(ValueError, match="no head .* penultimate= must name"):
        ModelSpec(name="m", module=net, probe_layers=["layer1.0"], head=None, num_classes=None, input_size=16)
    with pytest.raises(ValueError, match="no head .* num_classes=4"):
        ModelSpec(name="m", module=net, probe_layers=["layer1.0"], head=None, num_classes=4, input_size=16,
                  penultimate="layer1.1")
    headless = spec_from_module(net, probe_layers=["layer1.0", "layer1.1"], head=None, penultimate="layer1.1")
    assert headless.num_classes is None
    with pytest.raises(ValueError, match="first unit of block 'layer1.0'"):
        dataclasses.replace(tiny_spec, branches={"u": BlockBranches(main="layer1.0.bn2", block="layer1.0",
                                                                    skip_from="previous")})
    with pytest.raises(ValueError, match="whose block 'u' is not a probe layer .*block=..."):
        dataclasses.replace(tiny_spec, branches={"u": BlockBranches(main="layer1.0.bn2")})
    with pytest.raises(ValueError, match="post function"):
        dataclasses.replace(tiny_spec, branches={
            "a": BlockBranches(main="layer1.0.bn1", block="layer1.0", post=torch.relu),
            "b": BlockBranches(main="layer1.0.bn2", block="layer1.0", skip_from="previous")})
    with pytest.raises(ValueError, match="not consecutive"):
        dataclasses.replace(tiny_spec, branches={
            "a": BlockBranches(main="layer1.0.bn1", block="layer1.0"),
            "b": BlockBranches(main="layer1.1.bn2", block="layer1.1"),
            "c": BlockBranches(main="layer1.0.bn2", block="layer1.0")})
    with pytest.raises(ValueError, match="spec_from_module takes no argument"):
        spec_from_module(net, probe_layers=["layer1.0"], head="fc", pooling="cls")


# ---------------------------------------------------------------------- spatial positions
def test_spatial_tokens_of_cnns_average_to_the_penultimate(timm_case):
    key, spec, x = timm_case
    if not key.startswith("resnet"):
        pytest.skip("CNNs whose head pools the last block without a norm")
    grid = spatial_tokens(spec, x)
    assert grid.shape == (2, 2, 2, spec.get(spec.head).in_features)  # 64 px / 32
    with capture(spec, layers=False) as rec, torch.no_grad():
        spec.module(x)
    torch.testing.assert_close(grid.mean(dim=(1, 2)), rec["penultimate"], **TOL)


def test_spatial_tokens_of_vits_are_the_normed_patch_grid(timm_case):
    key, spec, x = timm_case
    if key not in TRANSFORMERS:
        pytest.skip("transformers only")
    grid = spatial_tokens(spec, x)
    net = spec.module
    with torch.no_grad():
        tokens = net.forward_features(x)[:, spec.prefix_tokens:]  # normed by `norm`
        tokens = net.fc_norm(tokens)  # Identity unless the head norms after pooling
    side = int(round(tokens.shape[1] ** 0.5))
    assert grid.shape == (2, side, side, tokens.shape[2])
    torch.testing.assert_close(grid, tokens.reshape(2, side, side, -1), **TOL)
    if key == "vit":
        assert side == 8 and spec.spatial_norm is None  # 32 px, /4 patches; norm before pooling
    if key == "vit-avg":  # the head pools, then norms: each position gets the same norm
        assert spec.spatial_norm == "fc_norm" and spec.spatial == "norm"


def test_spatial_tokens_of_convnext_are_normed_like_the_head(any_case):
    key, spec, x = any_case
    if key not in ("convnext", "convnext-conv-mlp", "tv-convnext"):
        pytest.skip("ConvNeXt only")
    grid = spatial_tokens(spec, x)
    seen = {}
    _forward_with(spec, x, [(spec.probe_layers[-1], "post", lambda m, i, o: seen.__setitem__("map", o.clone()))])
    ref = nn.functional.layer_norm(seen["map"].permute(0, 2, 3, 1), (seen["map"].shape[1],),
                                   spec.get(spec.spatial_norm).weight, spec.get(spec.spatial_norm).bias,
                                   spec.get(spec.spatial_norm).eps)
    torch.testing.assert_close(grid, ref, **TOL)


# ---------------------------------------------------------------------- preprocessing
def test_preprocessing_comes_from_timm_data_config():
    from timm.data import resolve_model_data_config

    r50 = build_model("timm:resnet50.a1_in1k", num_classes=5, model_kwargs=dict(layers=[1, 1, 1, 1]))
    assert (r50.input_size, r50.resize, r50.interpolation, r50.crop_mode) == (224, 235, "bicubic", "center")
    cfg = resolve_model_data_config(r50.module)
    assert r50.mean == cfg["mean"] and r50.std == cfg["std"]
    assert r50.crop_pct == pytest.approx(cfg["crop_pct"], abs=0.01)
    vit = build_model("timm:vit_base_patch16_224.augreg_in21k_ft_in1k", num_classes=5,
                      model_kwargs=dict(depth=1, embed_dim=16, num_heads=2))
    assert (vit.input_size, vit.resize, vit.mean) == (224, 248, (0.5, 0.5, 0.5))  # crop_pct 0.9
    d = vit.describe()
    assert d["crop_pct"] == pytest.approx(0.9, abs=0.01) and d["interpolation"] == "bicubic"
    small = build_model(*TIMM_MODELS["vit"][:1], **TIMM_MODELS["vit"][1])
    assert small.input_size == 32  # a ViT built for 32 px takes its own size


def test_torchvision_preprocessing_comes_from_the_weights():
    with torch.device("meta"):  # structure only: no memory, no initialisation
        vit = build_model("vit_b_16")
        cnx = build_model("convnext_tiny")
        r50 = build_model("resnet50")
    assert (vit.input_size, vit.resize, vit.interpolation) == (224, 256, "bilinear")
    assert (vit.token_pool, vit.prefix_tokens) == ("cls", 1)
    assert len(vit.probe_layers) == 12 and vit.probe_layers[0] == "encoder.layers.encoder_layer_0"
    assert list(vit.branches)[:2] == ["encoder.layers.encoder_layer_0.attn", "encoder.layers.encoder_layer_0.mlp"]
    assert vit.head == "heads.head" and vit.spatial == "encoder.ln"
    assert (cnx.input_size, cnx.resize, len(cnx.probe_layers), cnx.head) == (224, 236, 18, "classifier.2")
    assert r50.resize == 232  # DEFAULT = IMAGENET1K_V2's transforms
    regnet = build_model("regnet_y_400mf").probe_layers
    assert regnet[:2] == ["trunk_output.block1.block1-0", "trunk_output.block2.block2-0"] and len(regnet) == 16


def test_torchvision_named_weights_without_network(monkeypatch):
    import torchvision.models._api as tv_api

    state = build_model("regnet_y_400mf", seed=0).module.state_dict()
    monkeypatch.setattr(tv_api, "load_state_dict_from_url", lambda url, *a, **k: state)
    spec = build_model("regnet_y_400mf", weights="IMAGENET1K_V1")
    assert spec.class_names[:2] == ["tench", "goldfish"] and spec.resize == 256
    assert build_model("regnet_y_400mf", weights="IMAGENET1K_V2").resize == 232
    with pytest.raises(ValueError, match="unknown weights 'V9' for regnet_y_400mf.*IMAGENET1K_V1"):
        build_model("regnet_y_400mf", weights="V9")


# ---------------------------------------------------------------------- weights and errors
def test_timm_pretrained_path_without_network(monkeypatch):
    import timm.models._builder as builder

    loaded = []
    monkeypatch.setattr(builder, "load_pretrained", lambda model, *a, **k: loaded.append(type(model).__name__))
    spec = build_model("timm:resnet18.a1_in1k", weights="pretrained", model_kwargs=dict(layers=[1, 1, 1, 1]))
    assert loaded == ["ResNet"] and spec.num_classes == 1000 and spec.class_names[:2] == ["tench", "goldfish"]
    assert build_model("timm:resnet18", weights="a1_in1k", model_kwargs=dict(layers=[1, 1, 1, 1])).num_classes == 1000
    assert build_model("timm:resnet18", weights="pretrained", num_classes=0,
                       model_kwargs=dict(layers=[1, 1, 1, 1])).head is None
    with pytest.raises(ValueError, match="1000-class head but num_classes=10"):
        build_model("timm:resnet18.a1_in1k", weights="pretrained", num_classes=10)
    with pytest.raises(ValueError, match="names the tag 'a1_in1k' but weights='a2_in1k'"):
        build_model("timm:resnet18.a1_in1k", weights="a2_in1k")

    def offline(*a, **k):
        raise OSError("no network")

    monkeypatch.setattr(builder, "load_pretrained", offline)
    with pytest.raises(ValueError, match=r"could not fetch timm weights for resnet18\.a1_in1k.*--checkpoint"):
        build_model("timm:resnet18.a1_in1k", weights="pretrained", model_kwargs=dict(layers=[1, 1, 1, 1]))


def test_timm_name_errors():
    with pytest.raises(ValueError, match=r"unknown timm model 'resnet5' \(close matches: .*resnet50"):
        build_model("timm:resnet5")
    with pytest.raises(ValueError, match=r"no weights tagged 'nope' for resnet50; its tags are: .*a1_in1k"):
        build_model("timm:resnet50.nope")
    with pytest.raises(ValueError, match="give a timm model name after 'timm:'"):
        build_model("timm:")
    with pytest.raises(ValueError, match="distilled DeiT.*deit_small_patch16_224"):
        build_model("timm:deit_tiny_distilled_patch16_224", model_kwargs=dict(img_size=32, patch_size=8, depth=1))
    with pytest.raises(ValueError, match="none of the residual layouts.*spec_from_module"):
        build_model("timm:mobilenetv3_small_050", num_classes=5)
    with pytest.raises(ValueError, match=r"rejects the arguments \['bogus'\]"):
        build_model("timm:resnet18", model_kwargs=dict(bogus=1))
    with pytest.raises(ValueError, match="weights='IMAGENET1K_V1' only applies to torchvision models and timm"):
        build_model("small-resnet", weights="IMAGENET1K_V1")


def test_missing_timm_names_the_extra(monkeypatch):
    from feature_complexity.models.timm_models import MissingDependencyError

    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` now raises ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'feature-complexity\[timm\]'"):
        build_model("timm:resnet18")
    with pytest.raises(ValueError):  # the CLI reports ValueErrors
        build_model("timm:resnet18")


def test_timm_checkpoints_load_and_headless_ones_too(tmp_path):
    src = build_model("timm:convnext_atto", num_classes=7, seed=0, model_kwargs=dict(depths=(1, 1, 1, 1)))
    torch.save({"state_dict": src.module.state_dict()}, tmp_path / "cnx.pth")
    spec = build_model("timm:convnext_atto", checkpoint=tmp_path / "cnx.pth", seed=5,
                       model_kwargs=dict(depths=(1, 1, 1, 1)))
    assert spec.num_classes == 7 and torch.equal(spec.get("head.fc").weight, src.get("head.fc").weight)
    bare = build_model("timm:convnext_atto", num_classes=0, seed=0, model_kwargs=dict(depths=(1, 1, 1, 1)))
    torch.save(bare.module.state_dict(), tmp_path / "bare.pth")
    again = build_model("timm:convnext_atto", checkpoint=tmp_path / "bare.pth", model_kwargs=dict(depths=(1, 1, 1, 1)))
    assert again.head is None and again.build_args["num_classes"] == 0


def test_pooled_class_token_is_copied_before_in_place_updates():
    """A class token is a view of the block output; a later in-place update (as in ResNet's
    ``out += identity`` or an in-place LayerScale) must not change what was recorded."""

    class Seq(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = nn.Linear(4, 4)
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            t = self.block(x)
            snapshot = t[:, 0].clone()
            t.mul_(0.0)  # in place, after the probe hook has run
            return self.fc(snapshot + t[:, 0])

    net = Seq().eval()
    spec = spec_from_module(net, probe_layers=["block"], head="fc", token_pool="cls", prefix_tokens=1)
    x = torch.randn(2, 5, 4)
    with capture(spec) as rec, torch.no_grad():
        spec.module(x)
    with torch.no_grad():
        want = net.block(x)[:, 0]
    torch.testing.assert_close(rec["layers"]["block"], want)
