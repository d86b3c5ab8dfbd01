"""The search objective stays finite for any β and LUT scale and steers θ; a step that is not
finite stops the search; the temperature schedules; the per-epoch architecture columns."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from lut.store import load_lut
from search.latency import LatencyModel
from search.strategies import SearchConfig
from search.strategies.common import ArchLog, loss_form, temperature
from search.strategies.objective import (
    SearchDivergedError,
    check_finite_step,
    latency_loss,
    objective_value,
    target_factor,
)

CFG = SearchConfig()


def scaled_latency(scale: float):
    """MACs-based op latency (as `write_synthetic_lut`) times `scale`."""
    return lambda op: (1.0 + op.macs / 1e4) * scale


@pytest.fixture(scope="module")
def realistic(tmp_path_factory, write_synthetic_lut) -> LatencyModel:
    """A LUT whose networks take tens of ms (like a phone's): the scale at which CE·α·log(LAT)^β
    overflowed float32 at β = 30."""
    lat = LatencyModel.from_lut(load_lut(write_synthetic_lut(tmp_path_factory.mktemp("l"), "fbnet", scaled_latency(4.0))))
    assert 10_000 < lat.min_max_us()[0] < lat.min_max_us()[1] < 1_000_000, lat.min_max_us()
    return lat


def _theta_step(lat: LatencyModel, cfg: SearchConfig, form: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One Adam step (float32 θ [22, 9], as in a search) on the objective of a relaxed arch whose
    CE depends on θ only weakly (1e-4), so that the latency term decides the step's sign."""
    g = torch.Generator().manual_seed(0)
    theta = torch.zeros(lat.num_layers, len(lat.blocks), requires_grad=True)
    opt = torch.optim.Adam([theta], lr=0.01)
    m = torch.softmax(theta, dim=-1)
    ce = 1.5 + 1e-4 * (m * torch.rand(m.shape, generator=g)).sum()
    loss = latency_loss(ce, lat.expected_us(m), cfg, 1.0, form)
    opt.zero_grad()
    loss.backward()
    before = theta.detach().clone()
    check_finite_step(opt, [theta], where="test", loss=float(loss.detach()))
    return before, theta.detach()


@pytest.mark.parametrize("beta", [0.0, 0.6, 30.0, 100.0])
def test_fbnet_objective_at_beta_30_on_a_tens_of_ms_lut_moves_theta(realistic, beta: float) -> None:
    # the issue: at β = 30 the float32 product reached ~1e31, Adam's second moment became inf and
    # every θ step was 0. Through its logarithm the objective keeps its meaning and θ moves.
    cfg = replace(CFG, beta=beta)
    before, after = _theta_step(realistic, cfg, "mul")
    assert torch.isfinite(after).all()
    assert (after - before).abs().max() > 1e-3  # Adam's first step is ±lr wherever the gradient is non-zero
    if beta > 0:  # the latency factor points θ towards faster blocks in every layer
        table = realistic.table_finite_us
        fastest = table.masked_fill(~realistic.allowed, math.inf).argmin(1)
        assert ((after - before)[torch.arange(22), fastest] > 0).all()


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3])
@pytest.mark.parametrize("beta", [0.0, 30.0, 100.0])
def test_objective_is_finite_for_any_beta_and_lut_scale(realistic, scale, beta) -> None:
    # networks from ~20 µs to ~20 s (the tens-of-ms LUT scaled by 1e-3 … 1e3)
    lat = replace(realistic, table_us=realistic.table_us * scale, fixed_us=realistic.fixed_us * scale,
                  overhead_us=realistic.overhead_us * scale)  # fmt: skip
    cfg = replace(CFG, beta=beta, target_latency_ms=lat.min_max_us()[0] / 1000 * 1.5)
    for form in ("mul", "add", "target"):
        before, after = _theta_step(lat, cfg, form)
        assert torch.isfinite(after).all() and not torch.equal(before, after), form
    # the logged objective is the product itself, finite in float64 up to β ≈ 230 at 1 s
    lat_us = torch.tensor(lat.min_max_us()[1], dtype=torch.float64)
    value = objective_value(latency_loss(torch.tensor(1.2, dtype=torch.float64), lat_us, cfg, 1.0, "mul"), "mul")
    expected = 1.2 * cfg.alpha * math.log(float(lat_us)) ** beta
    assert value == pytest.approx(expected, rel=1e-9)


def test_a_step_that_is_not_finite_stops_with_a_clear_error() -> None:
    theta = torch.zeros(3, 4, requires_grad=True)
    opt = torch.optim.Adam([theta], lr=0.1)
    (theta.sum() * torch.tensor(float("inf"))).backward()
    with pytest.raises(SearchDivergedError, match="not finite"):
        check_finite_step(opt, [theta], where="fbnet θ step 7", loss=float("inf"))
    assert torch.equal(theta.detach(), torch.zeros(3, 4))  # the step was not taken


def test_the_target_form_pulls_latency_to_the_target_from_both_sides(realistic) -> None:
    lo, hi = realistic.min_max_us()
    target = (lo + hi) / 2
    cfg = replace(CFG, target_latency_ms=target / 1000)
    assert loss_form(cfg, "mul") == "target"
    for lat_us, sign in ((0.7 * target, -1.0), (1.3 * target, 1.0)):  # too fast → raise it; too slow → lower it
        lat = torch.tensor(lat_us, dtype=torch.float64, requires_grad=True)
        latency_loss(torch.tensor(1.0), lat, cfg, 1.0, "target").backward()
        assert torch.sign(lat.grad) == sign
    factors = target_factor(torch.tensor([0.5, 0.9, 1.0, 1.1, 2.0], dtype=torch.float64) * target, cfg)
    assert factors[2] == 1.0 and (factors < 1.0).sum() == 4 and factors[1] > factors[0] and factors[3] > factors[4]
    with pytest.raises(ValueError, match="target-latency-ms"):
        loss_form(replace(cfg, latency_loss="add"), "mul")


def test_temperature_schedules() -> None:
    cfg = SearchConfig(epochs=6, warmup_epochs=2, tau0=4.0, tau_end=0.1)
    taus = [temperature(cfg, e) for e in range(8)]
    assert taus[:3] == [4.0, 4.0, 4.0]  # warm-up, then the first search epoch, at τ0
    assert taus[-1] == pytest.approx(0.1)  # fitted: the last epoch asked for ends at tau_end
    assert all(a > b for a, b in zip(taus[2:], taus[3:]))
    paper = SearchConfig(tau_schedule="paper")
    assert [temperature(paper, e) for e in (0, 10)] == pytest.approx([5.0, 5.0 * math.exp(-0.45)])
    # an explicit --tau-decay keeps its old meaning: τ0 · exp(−decay · epoch)
    assert temperature(replace(cfg, tau_decay=0.25), 3) == pytest.approx(4.0 * math.exp(-0.75))
    with pytest.raises(ValueError, match="tau_schedule"):
        temperature(replace(cfg, tau_schedule="cosine"), 0)


def test_arch_log_counts_argmax_changes_and_stable_epochs(realistic) -> None:
    logits = torch.zeros(22, 9)
    track = ArchLog(realistic, logits)
    moved = logits.clone()
    moved[[0, 5, 7], 3] = 1.0
    rows = [track.columns(logits), track.columns(moved), track.columns(moved), track.columns(moved)]
    assert [r["argmax_changes"] for r in rows] == [0, 3, 0, 0]
    assert track.stable_epochs() == 2
    assert rows[0]["theta_entropy"] == pytest.approx(math.log(9)) and rows[1]["theta_entropy"] < math.log(9)
