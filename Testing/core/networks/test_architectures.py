"""Every registered architecture: parameter counts from the papers' specifications, shapes,
forward/backward in 2D and 3D, encode/decode split, encoder keys, edge guidance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from toothseg.core import InputError
from toothseg.core.networks import architecture_names, build_network
from toothseg.core.networks.edge import laplacian_level, sobel_magnitude


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------- independent parameter formulas
def conv(cin, cout, k, dims=3, bias=True):
    return k**dims * cin * cout + (cout if bias else 0)


def vnet_formula(n=16, classes=2, cin=1):
    """RAIL's V-Net table in methods.md §1.1, counted by hand (conv bias + BatchNorm γ/β)."""
    f = n
    total = 0
    for stages, c_in, c_out in [(1, cin, f), (2, 2 * f, 2 * f), (3, 4 * f, 4 * f), (3, 8 * f, 8 * f),
                                (3, 16 * f, 16 * f), (3, 8 * f, 8 * f), (3, 4 * f, 4 * f), (2, 2 * f, 2 * f),
                                (1, f, f)]:
        for i in range(stages):
            total += conv(c_in if i == 0 else c_out, c_out, 3) + 2 * c_out
    for c_in, c_out in [(f, 2 * f), (2 * f, 4 * f), (4 * f, 8 * f), (8 * f, 16 * f),  # strided down convs
                        (16 * f, 8 * f), (8 * f, 4 * f), (4 * f, 2 * f), (2 * f, f)]:  # transposed up convs
        total += conv(c_in, c_out, 2) + 2 * c_out
    return total + conv(f, classes, 1)


def resvnet_formula(n=16, classes=2):
    f = n
    total = conv(1, f, 7, bias=False)  # stem; InstanceNorm without affine has no parameters
    c = f
    for index, blocks in enumerate((3, 4, 6, 3), start=1):
        out = f * 2**index
        for b in range(blocks):
            c_in = c if b == 0 else out
            total += conv(c_in, out, 3, bias=False) + conv(out, out, 3, bias=False)
            if b == 0:
                total += conv(c_in, out, 1, bias=False)
        c = out
    decoder = 0
    for stages, ch in [(3, 8 * f), (3, 4 * f), (2, 2 * f), (1, f)]:
        decoder += stages * (conv(ch, ch, 3) + 2 * ch)
    for c_in, c_out in [(16 * f, 8 * f), (8 * f, 4 * f), (4 * f, 2 * f), (2 * f, f)]:
        decoder += conv(c_in, c_out, 2) + 2 * c_out
    return total + decoder + conv(f, classes, 1)


def resenc_formula(features, strides, blocks, dec_convs, classes, dims=3, cin=1, k=3):
    """nnU-Net ResEnc U-Net (conv bias, affine InstanceNorm), methods.md §2.1."""
    total = conv(cin, features[0], k, dims) + 2 * features[0]
    c = features[0]
    for f, n in zip(features, blocks):
        for b in range(n):
            c_in = c if b == 0 else f
            total += conv(c_in, f, k, dims) + 2 * f + conv(f, f, k, dims) + 2 * f
            if b == 0 and c_in != f:
                total += conv(c_in, f, 1, dims, bias=False) + 2 * f
        c = f
    for s in range(1, len(features)):
        below, skip = features[-s], features[-(s + 1)]
        stride = strides[-s]
        total += below * skip * int(np.prod(stride)) + skip
        for i in range(dec_convs[s - 1]):
            total += conv(2 * skip if i == 0 else skip, skip, k, dims) + 2 * skip
        total += skip * classes + classes
    return total


def mamba_formula(d=320, d_state=32, expand=2, headdim=80, d_conv=4):
    di = expand * d
    heads = di // headdim
    conv_dim = di + 2 * d_state
    return (2 * d  # LayerNorm before the layer
            + d * (2 * di + 2 * d_state + heads)  # in_proj (no bias)
            + conv_dim * d_conv + conv_dim  # depthwise conv1d with bias
            + 3 * heads  # dt_bias, A_log, D
            + di  # gated RMSNorm weight
            + di * d)  # out_proj


def unet2d_formula(classes, b=32, cin=1):
    def double(c_in, c_out, mid=None):
        mid = mid or c_out
        return 9 * c_in * mid + 2 * mid + 9 * mid * c_out + 2 * c_out

    return (double(cin, b) + double(b, 2 * b) + double(2 * b, 4 * b) + double(4 * b, 8 * b) + double(8 * b, 8 * b)
            + double(16 * b, 4 * b, 8 * b) + double(8 * b, 2 * b, 4 * b) + double(4 * b, b, 2 * b) + double(2 * b, b, b)
            + b * classes + classes)


UMAMBA2_PLAN = dict(features=[32, 64, 128, 256, 320, 320, 320],
                    strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]],
                    blocks=[1, 3, 4, 6, 6, 6, 6], dec_convs=[1] * 6)


def test_registry_lists_every_architecture():
    assert architecture_names() == ["plain_conv_unet", "resenc_unet", "resvnet", "umamba2", "unet2d", "unet2d_nac",
                                    "unet2d_scag", "vnet"]
    with pytest.raises(InputError, match="did you mean 'vnet'"):
        build_network("vnett")
    with pytest.raises(InputError, match="3D"):
        build_network("vnet", spatial_dims=2)
    with pytest.raises(InputError, match="cannot build"):
        build_network("vnet", n_filterz=16)
    with pytest.raises(InputError, match="cannot build 'unet2d': edge_cbam must be one of"):  # a refused value
        build_network("unet2d", edge_guided=True, edge_cbam="sometimes")
    for name in ("unet2d", "vnet"):  # a setting the network would ignore is refused, not dropped silently
        with pytest.raises(InputError, match="edge_cbam='residual' needs edge_guided=true"):
            build_network(name, edge_cbam="residual")


def test_vnet_parameter_count():
    assert n_params(build_network("vnet")) == vnet_formula() == 9_448_866  # the "9.44 M" V-Net of SSL papers


def test_resvnet_parameter_count():
    model = build_network("resvnet")
    assert n_params(model) == resvnet_formula()


def test_umamba2_parameter_count_of_the_sts_plan():
    model = build_network("umamba2", num_classes=13, deep_supervision=True)
    expected = resenc_formula(UMAMBA2_PLAN["features"], UMAMBA2_PLAN["strides"], UMAMBA2_PLAN["blocks"],
                              UMAMBA2_PLAN["dec_convs"], 13) + mamba_formula()
    assert n_params(model) == expected
    assert n_params(model.mamba_layer) == mamba_formula()
    # The report states 156 M; the plan as published (7 stages, 1 decoder conv per stage) gives 142.1 M.
    # The gap (9 %) is reported in the README; this checks we are within it and not off by a stage.
    assert abs(expected - 156e6) / 156e6 < 0.1


def test_resenc_2d_and_3d_counts():
    for dims in (2, 3):
        model = build_network("resenc_unet", spatial_dims=dims, num_classes=4, features_per_stage=[16, 32, 64, 96],
                              strides=[1, 2, 2, 2], n_blocks_per_stage=[1, 2, 2, 2], n_conv_per_stage_decoder=[2, 1, 1])
        strides = [[s] * dims for s in (1, 2, 2, 2)]
        assert n_params(model) == resenc_formula([16, 32, 64, 96], strides, [1, 2, 2, 2], [2, 1, 1], 4, dims)


@pytest.mark.parametrize("name", ["unet2d", "unet2d_scag", "unet2d_nac"])
def test_unet2d_family_counts(name):
    model = build_network(name, num_classes=33)
    base = unet2d_formula(33)
    if name == "unet2d":
        assert n_params(model) == base
    else:  # gates (and the context block) add parameters on top of the plain U-Net
        gates = sum(n_params(g) for g in model.gates)
        context = n_params(model.context) if model.context is not None else 0
        assert n_params(model) == base + gates + context
        assert gates > 0 and (name != "unet2d_nac" or context > 0)


CASES = [
    ("vnet", {}, (2, 1, 32, 32, 16)),
    ("vnet", {"n_filters": 8, "has_dropout": True, "edge_guided": True}, (1, 1, 32, 32, 16)),  # 8: as the 3D table
    ("resvnet", {}, (1, 1, 32, 32, 16)),
    ("resenc_unet", {"spatial_dims": 3, "features_per_stage": [8, 16, 32], "strides": [1, 2, 2],
                     "n_blocks_per_stage": [1, 1, 1]}, (2, 1, 16, 16, 16)),
    ("resenc_unet", {"spatial_dims": 2, "features_per_stage": [8, 16, 32], "strides": [1, 2, 2],
                     "n_blocks_per_stage": [1, 1, 1]}, (2, 1, 32, 48)),
    ("umamba2", {"spatial_dims": 3, "features_per_stage": [8, 16, 32], "strides": [1, 2, 2],
                 "n_blocks_per_stage": [1, 1, 1], "headdim": 16}, (2, 1, 16, 16, 16)),
    ("umamba2", {"spatial_dims": 2, "features_per_stage": [8, 16, 32], "strides": [1, 2, 2],
                 "n_blocks_per_stage": [1, 1, 1], "headdim": 16}, (2, 1, 32, 32)),
    ("unet2d", {"base_channels": 8}, (2, 1, 32, 48)),
    ("unet2d_scag", {"base_channels": 8}, (2, 1, 32, 48)),
    ("unet2d_nac", {"base_channels": 8}, (2, 1, 32, 48)),
    ("unet2d", {"base_channels": 8, "edge_guided": True}, (2, 1, 32, 48)),
    ("unet2d", {"base_channels": 8, "edge_guided": True, "edge_cbam": "residual"}, (2, 1, 32, 48)),
    ("vnet", {"n_filters": 8, "edge_guided": True, "edge_cbam": "none"}, (1, 1, 32, 32, 16)),
]


@pytest.mark.parametrize("name, kwargs, shape", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_forward_backward_and_feature_split(name, kwargs, shape):
    torch.manual_seed(0)
    model = build_network(name, num_classes=3, **kwargs)
    x = torch.randn(shape)
    out = model(x)
    assert out.shape == (shape[0], 3, *shape[2:])
    out.square().mean().backward()
    # nnU-Net always builds every deep-supervision head; without deep supervision only the last is used
    last_head = len(kwargs.get("strides", [])) - 2
    heads = {f"decoder.seg_layers.{i}." for i in range(8)} - {f"decoder.seg_layers.{last_head}."}
    grads = {n: p.grad for n, p in model.named_parameters() if not any(n.startswith(h) for h in heads)}
    assert all(g is not None for g in grads.values()), [n for n, g in grads.items() if g is None]
    assert any(g.abs().sum() > 0 for g in grads.values())
    model.eval()
    with torch.no_grad():
        features = model.encode(x)
        torch.testing.assert_close(model.decode(features, x), model(x))
    assert model.encoder_state_dict() and set(model.encoder_state_dict()) < set(model.state_dict())


def test_deep_supervision_outputs():
    model = build_network("resenc_unet", spatial_dims=3, num_classes=2, features_per_stage=[8, 16, 32, 32],
                          strides=[1, 2, 2, [1, 2, 2]], n_blocks_per_stage=[1, 1, 1, 1], deep_supervision=True)
    outputs = model(torch.randn(1, 1, 16, 32, 32))
    assert [tuple(o.shape[2:]) for o in outputs] == [(16, 32, 32), (8, 16, 16), (4, 8, 8)]
    assert model.size_divisor == (4, 8, 8)


def test_sobel_and_laplacian():
    z, y, x = torch.meshgrid(torch.arange(8.0), torch.arange(10.0), torch.arange(12.0), indexing="ij")
    ramp = (2.0 * x)[None, None]
    magnitude = sobel_magnitude(ramp)[0, 0, 1:-1, 1:-1, 1:-1]
    torch.testing.assert_close(magnitude, torch.full_like(magnitude, 2.0 * 2 * 16))  # slope 2, Sobel gain 2*4*4
    constant = torch.full((1, 3, 12, 12, 12), 0.7)
    lap = laplacian_level(constant)[0, 0, 4:-4, 4:-4, 4:-4]  # away from the zero-padded border
    assert lap.abs().max() < 1e-5  # true zero interleaving + 2^3 gain preserves a constant map in 3D
    constant2d = torch.full((1, 2, 16, 16), 0.3)
    assert laplacian_level(constant2d)[0, 0, 4:-4, 4:-4].abs().max() < 1e-5


@pytest.mark.parametrize("dims", [2, 3])
def test_edge_module_cbam_modes_share_weights_and_differ_only_in_how_they_end(dims):
    """``gate``: CBAM(y) (the seed's); ``residual``: y + CBAM(y); ``none``: y — same parameters otherwise."""
    from toothseg.core.networks.edge import EdgeGuidedAttention

    torch.manual_seed(0)
    modules = {mode: EdgeGuidedAttention(8, dims, cbam=mode).eval() for mode in ("gate", "residual", "none")}
    modules["residual"].load_state_dict(modules["gate"].state_dict())  # the same keys: checkpoints load either way
    missing = modules["none"].load_state_dict(modules["gate"].state_dict(), strict=False)
    assert missing.missing_keys == [] and all(k.startswith("cbam.") for k in missing.unexpected_keys)
    x = torch.randn((2, 8) + (8,) * dims)
    edge = torch.rand((2, 1) + (8,) * dims)
    with torch.no_grad():
        y = modules["none"](x, edge)
        cbam = modules["gate"].cbam
        torch.testing.assert_close(modules["gate"](x, edge), cbam(y))
        torch.testing.assert_close(modules["residual"](x, edge), y + cbam(y))
        assert not torch.allclose(cbam(y), y)
    with pytest.raises(ValueError, match="edge_cbam must be one of gate, residual, none"):
        EdgeGuidedAttention(8, dims, cbam="sometimes")


def test_vnet_initialisation_is_kaiming():
    model = build_network("vnet")
    weight = model.block_five.conv[0].weight
    fan_in = weight.shape[1] * 27
    assert weight.std().item() == pytest.approx((2.0 / fan_in) ** 0.5, rel=0.05)
    assert torch.all(model.block_five.conv[1].weight == 1)


def test_edge_guided_vnet_keeps_pytorch_default_initialisation():
    """As the public edge-guided V-Net code: with RAIL's Kaiming initialisation it does not learn."""
    model = build_network("vnet", edge_guided=True)
    weight = model.block_five.conv[0].weight
    fan_in = weight.shape[1] * 27
    assert weight.std().item() == pytest.approx((1.0 / (3 * fan_in)) ** 0.5, rel=0.05)  # kaiming_uniform(a=√5)
    model.kaiming_init()
    assert model.block_five.conv[0].weight.std().item() == pytest.approx((2.0 / fan_in) ** 0.5, rel=0.05)


def _blobs(shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """An easy task: two bright balls (one per sample) on noise, (B, 1, *spatial) images and masks."""
    torch.manual_seed(1)
    spatial = shape[2:]
    grids = torch.meshgrid(*[torch.arange(float(n)) for n in spatial], indexing="ij")
    radius = min(spatial) / 4
    masks = []
    for sample in range(2):
        where = (1 + sample) / 3
        centre = [n * (where if axis % 2 == 0 else 1 - where) for axis, n in enumerate(spatial)]
        masks.append((sum((g - c) ** 2 for g, c in zip(grids, centre)) < radius**2).long())
    mask = torch.stack(masks)
    return (2.0 * mask.float() + 0.5 * torch.randn(mask.shape))[:, None], mask


@pytest.mark.parametrize("name, kwargs, shape", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_every_architecture_learns_an_easy_target(name, kwargs, shape):
    """A network that cannot learn two bright balls in 40 steps has a construction or initialisation
    bug (the edge-guided V-Net with Kaiming initialisation scored 0 here; see bench_edge_guided_fit.py)."""
    torch.manual_seed(0)
    model = build_network(name, num_classes=2, **kwargs)
    image, mask = _blobs(shape)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(40):
        logits = model(image)
        probs = torch.softmax(logits, 1)[:, 1]
        dice = 2 * (probs * mask).sum() / (probs.sum() + mask.sum())
        loss = torch.nn.functional.cross_entropy(logits, mask) + 1 - dice
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        found = model(image).argmax(1) == 1
    dice = 2 * (found & (mask == 1)).sum().item() / (found.sum().item() + mask.sum().item())
    assert dice > 0.5, f"{name} {kwargs}: foreground Dice {dice:.3f} after 40 steps"
