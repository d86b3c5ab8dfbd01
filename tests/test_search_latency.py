"""The latency model: LUT → [layers × blocks] tensor, agreement with Lut.predict_us, coverage."""

from __future__ import annotations

import math

import pytest
import torch

from lut.correction import Correction
from lut.store import LutCoverageError, LutError, load_lut, runtime_dir_name, write_lut
from search.latency import LatencyModel, LatencyModelError, check_proxy_space, resolve_lut
from search.space import NAMED_ARCHS, Arch, arch_ops, get_space


@pytest.fixture(scope="module")
def fbnet_lut(tmp_path_factory: pytest.TempPathFactory, write_synthetic_lut):
    root = tmp_path_factory.mktemp("luts")
    return load_lut(write_synthetic_lut(root, "fbnet", overhead_us=37.5))


@pytest.fixture(scope="module")
def model(fbnet_lut) -> LatencyModel:
    return LatencyModel.from_lut(fbnet_lut)


def test_agrees_with_lut_predict_us_for_random_and_named_archs(fbnet_lut, model) -> None:
    g = torch.Generator().manual_seed(1)
    archs = [model.arch(i) for i in model.sample_uniform(20, g)]
    archs += [a for a in NAMED_ARCHS.values() if a.space == "fbnet"]  # incl. a 1504-wide head
    for arch in archs:
        expected = fbnet_lut.predict_us([op.key for op in arch_ops(arch)])
        assert model.predict_us(arch) == pytest.approx(expected, rel=1e-12)


def test_batch_prediction_matches_single_and_tensor_shape(model) -> None:
    idx = model.sample_uniform(64, torch.Generator().manual_seed(2))
    batch = model.predict_batch_us(idx)
    assert batch.shape == (64,)
    singles = torch.tensor([model.predict_us(model.arch(i).blocks) for i in idx], dtype=torch.float64)
    torch.testing.assert_close(batch, singles)
    assert model.table_us.shape == (22, 9)
    assert model.overhead_us == pytest.approx(37.5)


def test_expected_latency_of_one_hot_masks_is_the_arch_latency_and_differentiable(model) -> None:
    idx = model.sample_uniform(3, torch.Generator().manual_seed(3))
    masks = torch.nn.functional.one_hot(idx, 9).double().requires_grad_(True)
    exp = model.expected_us(masks)
    torch.testing.assert_close(exp.detach(), model.predict_batch_us(idx))
    exp.sum().backward()
    # d E[LAT] / d m[l, i] is the LUT entry itself
    torch.testing.assert_close(masks.grad[0], model.table_finite_us)


def test_disallowed_blocks_are_inf_and_masked(tmp_path, write_synthetic_lut) -> None:
    lat = LatencyModel.from_lut(load_lut(write_synthetic_lut(tmp_path, "proxyless_mobile")))
    space = get_space("proxyless_mobile")
    zero = space.candidates_all.index("zero")
    for layer in space.layers():
        allowed = "zero" in space.candidates(layer)
        assert bool(lat.allowed[layer.index, zero]) == allowed
        assert math.isinf(lat.table_us[layer.index, zero]) != allowed
    lo, hi = lat.min_max_us()
    assert math.isfinite(lo) and math.isfinite(hi) and lo < hi
    uniform = lat.allowed.double() / lat.allowed.sum(1, keepdim=True)
    assert math.isfinite(float(lat.expected_us(uniform)))


def test_missing_ops_are_listed(tmp_path, fbnet_lut) -> None:
    table = fbnet_lut.table.reset_index()
    dropped = table[table["block"] == "k5_e6"]["op_key"].tolist()[:3]
    table = table[~table["op_key"].isin(dropped)]
    samples = fbnet_lut.samples[~fbnet_lut.samples["op_key"].isin(dropped)]
    path = write_lut(tmp_path, device_id="partial", space="fbnet", runtime_dir=runtime_dir_name("x", 1),
                     table=table, samples=samples, meta=dict(fbnet_lut.meta))
    with pytest.raises(LutCoverageError) as e:
        LatencyModel.from_lut(load_lut(path))
    assert set(dropped) <= set(e.value.missing)


def test_space_mismatch_and_proxy_checks(fbnet_lut) -> None:
    with pytest.raises(LatencyModelError, match="measured for space"):
        LatencyModel.from_lut(fbnet_lut, "fbnet-r96-w0.35")
    check_proxy_space(get_space("fbnet"), get_space("fbnet-r32-w0.25"))
    with pytest.raises(LatencyModelError, match="proxy"):
        check_proxy_space(get_space("fbnet"), get_space("proxyless_mobile-r32"))


def test_resolve_by_device_space_runtime_takes_latest(tmp_path, write_synthetic_lut) -> None:
    write_synthetic_lut(tmp_path, "fbnet", device_id="dev", runtime="rt")
    write_synthetic_lut(tmp_path, "fbnet", device_id="dev", runtime="rt", overhead_us=5.0)
    lut = resolve_lut(device_id="dev", space="fbnet", runtime="rt", root=tmp_path)
    assert lut.version == 2
    with pytest.raises(LatencyModelError, match="name a LUT"):
        resolve_lut(device_id="dev", root=tmp_path)


def test_index_round_trip(model) -> None:
    arch = NAMED_ARCHS["fbnet_c"]
    idx = model.indices(arch.blocks)
    assert model.arch(idx).blocks == arch.blocks
    with pytest.raises(LatencyModelError):
        model.indices(arch.blocks[:-1])
    assert isinstance(model.arch(idx), Arch)


COEF = {"predicted_us": 0.93, "num_ops": -12.5, "1": -1500.0}  # a·Σ + c·computing ops + b


def _corrected_by_hand(fbnet_lut, arch: Arch) -> float:
    ops = arch_ops(arch)
    raw = fbnet_lut.predict_us([op.key for op in ops])
    return COEF["predicted_us"] * raw + COEF["num_ops"] * sum(not op.is_identity for op in ops) + COEF["1"]


def test_a_correction_folded_into_the_tensors_equals_the_formula_everywhere(fbnet_lut, model) -> None:
    fixed = model.with_correction(Correction("per_op", COEF))
    assert fixed.correction_info == {"name": "per_op", "coef": COEF} and model.correction is None
    idx = model.sample_uniform(16, torch.Generator().manual_seed(3))
    archs = [model.arch(i) for i in idx] + [a for a in NAMED_ARCHS.values() if a.space == "fbnet"]
    for arch in archs:  # random archs (skip identities among them) and named archs with other heads
        assert fixed.predict_us(arch) == pytest.approx(_corrected_by_hand(fbnet_lut, arch), rel=1e-12)
        keys = [op.key for op in arch_ops(arch)]
        assert fixed.predict_us(arch) == pytest.approx(Correction("per_op", COEF).predict_us(fbnet_lut, keys))
    one_hot = torch.nn.functional.one_hot(idx, len(model.blocks)).double()
    torch.testing.assert_close(fixed.expected_us(one_hot), fixed.predict_batch_us(idx))
    with pytest.raises(LutError, match="unknown features"):
        Correction("x", {"flops": 1.0})


def test_a_new_correction_needs_no_change_in_search(fbnet_lut, model, monkeypatch) -> None:
    """A feature and a correction added to lut.correction's registries fold into the search's
    tensors as they are: search names no feature."""
    from lut import correction as corr_mod

    dw = corr_mod.Feature(lambda lut, k: float(k.startswith("k5")), lambda lut, k: 0.0, "5×5 blocks")
    monkeypatch.setitem(corr_mod.FEATURES, "num_k5", dw)
    monkeypatch.setitem(corr_mod.CORRECTIONS, "k5", ("predicted_us", "num_k5", "1"))
    corr = Correction("k5", {"predicted_us": 1.1, "num_k5": 40.0, "1": 10.0})
    fixed = model.with_correction(corr)
    arch = NAMED_ARCHS["fbnet_c"]
    keys = [op.key for op in arch_ops(arch)]
    by_hand = 1.1 * fbnet_lut.predict_us(keys) + 40.0 * sum(k.startswith("k5") for k in keys) + 10.0
    assert fixed.predict_us(arch) == pytest.approx(by_hand, rel=1e-12)


def test_the_validated_correction_is_read_from_validation_json(tmp_path, write_synthetic_lut) -> None:
    import json

    lut = load_lut(write_synthetic_lut(tmp_path, "fbnet"))
    plain = LatencyModel.from_lut(lut)
    assert plain.with_validated_correction() is plain  # never validated: the additive sum
    report = {"prediction_model": "additive", "corrections": {"affine": {"coef": COEF}}}
    (lut.path / "validation.json").write_text(json.dumps(report))
    assert plain.with_validated_correction() is plain  # validated, and the sum was kept
    report["prediction_model"] = "affine"
    (lut.path / "validation.json").write_text(json.dumps(report))
    arch = NAMED_ARCHS["fbnet_c"]
    assert plain.with_validated_correction().predict_us(arch) == pytest.approx(_corrected_by_hand(lut, arch))
    report["corrections"] = {}
    (lut.path / "validation.json").write_text(json.dumps(report))
    with pytest.raises(LutError, match="no coefficients"):
        plain.with_validated_correction()


def test_span_runs_from_the_fastest_arch_to_the_uniform_expectation(model) -> None:
    table, allowed = model.table_us, model.allowed
    per_layer_mean = torch.stack([table[i][allowed[i]].mean() for i in range(model.num_layers)])
    uniform = float(per_layer_mean.sum()) + model.base_us  # each layer's candidates equally likely
    assert model.uniform_expected_us() == pytest.approx(uniform)
    assert model.span_us(0.0) == pytest.approx(model.min_max_us()[0])
    assert model.span_us(1.0) == pytest.approx(uniform)
    assert model.span_us(0.25) < model.span_us(0.5) < model.span_us(0.75)


def test_archs_sampled_near_a_target_centre_on_it(model) -> None:
    target = model.span_us(0.4)
    idx = model.sample_near(2000, target, torch.Generator().manual_seed(0))
    lat = model.predict_batch_us(idx)
    assert float(lat.mean()) == pytest.approx(target, rel=0.02)
    assert float(model.expected_us(model.tilted_probs(target))) == pytest.approx(target, rel=1e-6)
    uniform = model.predict_batch_us(model.sample_uniform(2000, torch.Generator().manual_seed(0)))
    assert float((lat - target).abs().median()) < float((uniform - target).abs().median())
