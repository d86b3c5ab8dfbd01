"""The search spaces: blocks, macro-architectures, archs, ops and costs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from torch import nn

from search.space import (
    BLOCKS,
    FBNET_BLOCKS,
    NAMED_ARCHS,
    PROXYLESS_BLOCKS,
    Arch,
    ArchError,
    Op,
    arch_macs,
    arch_ops,
    arch_params,
    block_spec,
    build_block,
    build_model,
    count_params,
    get_space,
    op_key,
    parse_op_key,
)
from search.space.modules import ChannelShuffle, FBNetBlock, MBConv, Skip, build_op

SEARCHABLE = [n for n, s in BLOCKS.items() if s.searchable]


def _shapes_for(name: str) -> list[tuple[int, int, int]]:
    """(c_in, c_out, stride) cases: stride 1 and 2, with and without channel change."""
    cases = [(8, 8, 1), (8, 16, 1), (8, 8, 2), (8, 16, 2)]
    if block_spec(name).kind == "zero":
        return cases[:1]  # only valid where shapes match (checked separately)
    return cases


@pytest.mark.parametrize("name", SEARCHABLE)
def test_block_output_shape_and_residual(name: str) -> None:
    for c_in, c_out, stride in _shapes_for(name):
        block = build_block(name, c_in, c_out, stride).eval()
        x = torch.randn(2, c_in, 12, 12)
        y = block(x)
        assert y.shape == (2, c_out, 12 // stride, 12 // stride), (name, c_in, c_out, stride)
        same_shape = c_in == c_out and stride == 1
        if isinstance(block, (FBNetBlock, MBConv)):
            assert block.use_residual == same_shape
            # The residual is really added: zeroing the last BN's scale leaves y == x exactly.
            if same_shape:
                bn = block.pwl[1]
                nn.init.zeros_(bn.weight)
                nn.init.zeros_(bn.bias)
                assert torch.equal(block(x), x)


@pytest.mark.parametrize("name", [n for n in FBNET_BLOCKS if n != "skip"])
def test_fbnet_block_structure(name: str) -> None:
    spec = block_spec(name)
    block = build_block(name, 16, 24, 2)
    assert isinstance(block, FBNetBlock)
    convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 3  # 1×1 conv is present at expansion 1 too, as in the reference
    pw, dw, pwl = convs
    mid = 16 * spec.expansion
    assert (pw.out_channels, pw.groups, pw.kernel_size) == (mid, spec.groups, (1, 1))
    assert (dw.groups, dw.kernel_size, dw.stride) == (mid, (spec.kernel,) * 2, (2, 2))
    assert (pwl.out_channels, pwl.groups) == (24, spec.groups)
    # BN after each conv, ReLU after the first two only.
    assert isinstance(block.pw[2], nn.ReLU) and isinstance(block.dw[2], nn.ReLU)
    assert len(block.pwl) == 2 and isinstance(block.pwl[1], nn.BatchNorm2d)
    assert isinstance(block.shuffle, ChannelShuffle) == (spec.groups > 1)


def test_channel_shuffle_interleaves_groups() -> None:
    x = torch.arange(6.0).reshape(1, 6, 1, 1)
    y = ChannelShuffle(2)(x).flatten().tolist()
    assert y == [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]


def test_g2_block_is_really_grouped() -> None:
    """With grouped 1×1 convs and no shuffle, output group 0 would only see input group 0.
    The shuffle mixes them: perturbing the second half of the input changes every output channel."""
    torch.manual_seed(0)
    block = build_block("k3_e1_g2", 8, 8, 1).eval()
    x = torch.randn(1, 8, 6, 6)
    x2 = x.clone()
    x2[:, 4:] += 1.0
    delta = (block(x2) - block(x) - (x2 - x)).abs().sum(dim=(0, 2, 3))  # residual removed
    assert (delta > 0).all()
    no_shuffle = build_block("k3_e1_g2", 8, 8, 1).eval()
    no_shuffle.load_state_dict(block.state_dict())
    no_shuffle.shuffle = nn.Identity()
    delta = (no_shuffle(x2) - no_shuffle(x) - (x2 - x)).abs().sum(dim=(0, 2, 3))
    assert torch.all(delta[:4] == 0) and torch.all(delta[4:] > 0)


def test_skip_is_identity_or_projection() -> None:
    assert build_block("skip", 8, 8, 1).conv is None
    x = torch.randn(1, 8, 6, 6)
    assert torch.equal(build_block("skip", 8, 8, 1)(x), x)
    proj = build_block("skip", 8, 16, 2)
    assert isinstance(proj, Skip) and proj.conv is not None
    conv = proj.conv[0]
    assert conv.kernel_size == (1, 1) and conv.stride == (2, 2)
    assert isinstance(proj.conv[2], nn.ReLU)


def test_zero_only_where_shapes_match() -> None:
    with pytest.raises(ValueError, match="matching shapes"):
        build_block("zero", 8, 16, 1)
    space = get_space("proxyless_mobile")
    for layer in space.layers():
        keeps = layer.c_in == layer.c_out and layer.stride == 1
        assert ("zero" in space.candidates(layer)) == keeps


def test_registry_rejects_unknown_and_duplicate() -> None:
    from search.space.blocks import register_block

    with pytest.raises(ValueError, match="unknown block 'k9_e9'"):
        build_block("k9_e9", 8, 8, 1)
    with pytest.raises(ValueError, match="already registered"):
        register_block(block_spec("k3_e1"))


def test_fbnet_macro_architecture() -> None:
    space = get_space("fbnet")
    layers = space.layers()
    assert len(layers) == 22
    assert space.candidates_all == FBNET_BLOCKS
    # Stride and channel change happen in the first layer of each stage.
    firsts = [(l.c_in, l.c_out, l.h, l.stride) for l in layers if l.index in (0, 1, 5, 9, 13, 17, 21)]
    assert firsts == [
        (16, 16, 112, 1),
        (16, 24, 112, 2),
        (24, 32, 56, 2),
        (32, 64, 28, 2),
        (64, 112, 14, 1),
        (112, 184, 14, 2),
        (184, 352, 7, 1),
    ]
    fixed = space.fixed_ops()
    assert fixed["stem"].key == "conv3x3_relu-i3x224x224-o16-s2"
    assert fixed["head"].key == "conv1x1_relu-i352x7x7-o1984-s1"
    assert fixed["classifier"].key == "pool_fc-i1984x7x7-o1000-s1"


def test_width_and_resolution_parameters() -> None:
    space = get_space("fbnet-r96-w0.35")
    assert space.name == "fbnet-r96-w0.35"
    assert space.layers()[0].h == 48
    # Published FBNet-96-0.35 widths (stem, then stages 1..7).
    assert [space.ch(c) for c in (16, 16, 24, 32, 64, 112, 184, 352)] == [8, 8, 16, 16, 24, 40, 72, 128]
    assert get_space("fbnet").name == "fbnet"
    with pytest.raises(ValueError, match="unknown search space"):
        get_space("mnasnet")


def test_proxyless_space() -> None:
    space = get_space("proxyless_mobile")
    assert len(space.layers()) == 21
    assert space.candidates_all == PROXYLESS_BLOCKS
    assert space.fixed_ops()["pre"].key == "mb_k3_e1-i32x112x112-o16-s1"
    arch = Arch("proxyless_mobile", [space.candidates(l)[0] for l in space.layers()])
    out = build_model(arch.validate()).eval()(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, 1000)


@pytest.mark.parametrize("name", list(NAMED_ARCHS))
def test_named_arch_builds_and_runs(name: str) -> None:
    arch = NAMED_ARCHS[name]
    space = get_space(arch.space)
    model = build_model(arch).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, space.resolution, space.resolution))
    assert out.shape == (1, 1000)


# Published MACs (FBNet paper, Table 3/4; M = 1e6): our counts agree within 1% (FBNet-B as
# released: 296.6 M vs the paper's 295 M), params within 9%.
@pytest.mark.parametrize(
    "name,macs_m,params_m",
    [("fbnet_a", 249, 4.3), ("fbnet_b", 295, 4.5), ("fbnet_c", 375, 5.5), ("fbnet_96_035_1", 12.9, None)],
)
def test_named_arch_costs_match_paper(name: str, macs_m: float, params_m: float | None) -> None:
    arch = NAMED_ARCHS[name]
    assert arch_macs(arch) / 1e6 == pytest.approx(macs_m, rel=0.03 if name != "fbnet_b" else 0.01)
    if params_m is not None:
        assert arch_params(arch) / 1e6 == pytest.approx(params_m, rel=0.09)


def _flop_counter_macs(module: nn.Module, shape: tuple[int, ...]) -> int:
    """MACs as torch counts them: FlopCounterMode counts 2 FLOPs per multiply-accumulate of convs
    and matmuls (BatchNorm, activations, adds and pooling are not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module.eval()(torch.zeros(shape))
    return counter.get_total_flops() // 2


def _all_block_cases() -> list[tuple[str, int, int, int]]:
    cases = []
    for name, spec in BLOCKS.items():
        shapes = [(8, 8, 1), (8, 16, 1), (8, 8, 2), (8, 16, 2)]
        if spec.kind in ("zero", "overhead"):
            shapes = shapes[:1]
        cases += [(name, *s) for s in shapes]
    return cases


@pytest.mark.parametrize(("name", "c_in", "c_out", "stride"), _all_block_cases())
def test_registry_costs_match_torch(name: str, c_in: int, c_out: int, stride: int) -> None:
    """Every registered block's MACs and params formula against torch's own count of the built
    module, at stride 1 and 2, with and without a channel change."""
    spec = block_spec(name)
    module = build_block(name, c_in, c_out, stride)
    assert spec.macs(c_in, 12, 12, c_out, stride) == _flop_counter_macs(module, (1, c_in, 12, 12))
    assert spec.params(c_in, c_out, stride) == count_params(module)


def test_arch_costs_match_torch() -> None:
    arch = NAMED_ARCHS["fbnet_c"]
    model = build_model(arch)
    assert arch_macs(arch) == _flop_counter_macs(model, (1, 3, 224, 224))
    assert arch_params(arch) == count_params(model)


def test_macs_against_hand_count() -> None:
    # pw 16→96 at 8×8, dw 3×3 on 96 at 4×4, pwl 96→24 at 4×4
    expected = 96 * 64 * 16 + 96 * 16 * 9 + 24 * 16 * 96
    assert Op("k3_e6", 16, 8, 8, 24, 2).macs == expected
    assert Op("k3_e6", 16, 8, 8, 24, 2).params == 16 * 96 + 96 * 9 + 96 * 24 + 2 * (96 + 96 + 24)
    # activations: the input, the expanded map, the strided depthwise output, the block's output
    assert Op("k3_e6", 16, 8, 8, 24, 2).activations == 16 * 64 + 96 * 64 + 96 * 16 + 24 * 16
    assert Op("pool_fc", 64, 7, 7, 10, 1).activations == 64 * 49 + 64 + 10
    assert Op("overhead", 8, 4, 4, 8, 1).activations == 8 * 16


def test_space_data_needs_no_torch() -> None:
    code = ("import sys; import search.space, lut.store, lut.compare, lut.validate, lut.correction, "
            "lut.__main__; from search.space import get_arch, arch_macs; arch_macs(get_arch('fbnet_c')); "
            "sys.exit('torch' in sys.modules)")  # fmt: skip
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_arch_json_round_trip_and_id() -> None:
    arch = NAMED_ARCHS["fbnet_c"]
    again = Arch.from_json(arch.to_json())
    assert again == arch and again.head_channels == 1984
    unnamed = Arch("fbnet", arch.blocks, info={"predicted_latency_us": 1.5})
    loaded = Arch.from_json(unnamed.to_json())
    assert loaded.blocks == arch.blocks and loaded.info == {"predicted_latency_us": 1.5}
    assert unnamed.id == loaded.id and unnamed.id.startswith("arch-fbnet-") and unnamed.label == unnamed.id
    other = Arch("fbnet", arch.blocks[:-1] + ("k3_e1",))
    assert other.id != unnamed.id and arch.label == "fbnet_c"


@pytest.mark.parametrize(
    "blocks,match",
    [
        (["k3_e1"] * 21, "21 blocks but space 'fbnet' has 22"),
        (["k3_e1"] * 5 + ["k7_e9"] + ["k3_e1"] * 16, r"layer 5 \(stage 3.*'k7_e9' is not a candidate"),
    ],
)
def test_bad_arch_errors(blocks: list[str], match: str) -> None:
    with pytest.raises(ArchError, match=match):
        Arch("fbnet", blocks).validate()


def test_bad_arch_json_errors() -> None:
    with pytest.raises(ArchError, match="not valid JSON"):
        Arch.from_json("{nope")
    with pytest.raises(ArchError, match="'space' and 'blocks'"):
        Arch.from_json(json.dumps({"blocks": []}))
    bad = ["k3_e1"] * 22
    bad[1] = "zero"  # a ProxylessNAS block in the FBNet space
    with pytest.raises(ArchError, match="layer 1 .*'zero'"):
        Arch.from_json(json.dumps({"space": "fbnet", "blocks": bad}))


def test_op_keys_round_trip_and_unique_ops() -> None:
    space = get_space("fbnet")
    ops = space.unique_ops()
    keys = [op.key for op in ops]
    assert len(keys) == len(set(keys))
    assert all(parse_op_key(k) == op for k, op in zip(keys, ops))
    # Fewer than 22 × 9 + fixed ops: layers with identical shapes share ops.
    assert 100 <= len(ops) < 22 * 9
    assert op_key("k3_e6", c_in=16, h=112, w=112, c_out=24, stride=2) == "k3_e6-i16x112x112-o24-s2"
    with pytest.raises(ValueError, match="malformed op key"):
        parse_op_key("k3_e6_16x112")
    # Every op of every named arch is in its space's unique ops (heads of named archs included).
    for arch in NAMED_ARCHS.values():
        unique = {op.key for op in get_space(arch.space).unique_ops()}
        assert {op.key for op in arch_ops(arch)} <= unique


def test_op_build_matches_shapes() -> None:
    for op in get_space("fbnet-r32-w0.25").unique_ops():
        y = build_op(op)(op.example_input())
        assert tuple(y.shape) == op.output_shape, op.key
        assert isinstance(op, Op)


def test_cli_json() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "search.space", "info", "--space", "fbnet", "--arch", "fbnet_c", "--json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    d = json.loads(out.strip().splitlines()[-1])
    assert d["space"] == "fbnet" and d["num_layers"] == 22
    assert isinstance(d["params"], int) and isinstance(d["macs"], int)
    assert d["num_unique_ops"] == len(get_space("fbnet").unique_ops())
    bad = subprocess.run(
        [sys.executable, "-m", "search.space", "info", "--arch", "nope"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "unknown arch 'nope'" in bad.stderr
