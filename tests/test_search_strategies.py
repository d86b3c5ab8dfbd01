"""Every registered strategy on the embedded data with a tiny budget: a valid arch.json, the hard
latency constraint, and ProxylessNAS's active-path count."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from lut.store import load_lut
from search.latency import LatencyModel
from search.run import run_search
from search.space import get_space, load_arch
from search.strategies import STRATEGIES, SearchConfig

PROXY = get_space("fbnet-r32-w0.25")
TINY = SearchConfig(
    epochs=1, warmup_epochs=0, batch_size=16, w_fraction=0.5, num_samples=2,
    population=4, tournament=2, cycles=6, eval_batches=1, tau0=1.0, mask_threshold=0.05,
)  # fmt: skip
SUBSET = 48


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def lat(tmp_path_factory: pytest.TempPathFactory, write_synthetic_lut) -> LatencyModel:
    return LatencyModel.from_lut(load_lut(write_synthetic_lut(tmp_path_factory.mktemp("l"), "fbnet")))


def _budget_ms(lat: LatencyModel) -> float:
    """A budget that the uniform median arch breaks: 30 % of the way from fastest to median."""
    lo = lat.min_max_us()[0]
    med = float(lat.predict_batch_us(lat.sample_uniform(512, torch.Generator().manual_seed(0))).median())
    return (lo + 0.3 * (med - lo)) / 1000.0


@pytest.mark.slow
@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_strategy_writes_a_valid_arch_within_the_hard_budget(strategy, lat, tmp_path) -> None:
    budget_ms = _budget_ms(lat)
    cfg = replace(TINY, strategy=strategy, max_latency_ms=budget_ms)
    summary = run_search(cfg, lat, PROXY, out=tmp_path / strategy, subset=SUBSET)
    arch = load_arch(summary["arch_path"])  # validates against the LUT's space
    assert arch.space == "fbnet" and arch.info["strategy"] == strategy
    assert summary["predicted_latency_us"] == pytest.approx(lat.predict_us(arch))
    assert summary["predicted_latency_us"] <= budget_ms * 1000
    assert all(s["predicted_latency_us"] <= budget_ms * 1000 for s in arch.info["samples"])
    assert 0.0 <= summary["val_accuracy"] <= 1.0
    assert (tmp_path / strategy / "log.csv").stat().st_size > 0


@pytest.mark.slow
def test_proxyless_keeps_one_path_per_weight_step_and_two_per_arch_step(lat, tmp_path) -> None:
    cfg = replace(TINY, strategy="proxyless")
    run_search(cfg, lat, PROXY, out=tmp_path / "p", subset=SUBSET)
    info = load_arch(tmp_path / "p" / "arch.json").info
    assert info["max_active_paths"] == {"weight_step": 1, "arch_step": 2}


@pytest.mark.slow
def test_darts_second_order_runs_and_differs_from_first_order(lat, tmp_path) -> None:
    thetas = []
    for order in (1, 2):
        cfg = replace(TINY, strategy="darts", darts_order=order, darts_xi=0.05)
        run_search(cfg, lat, PROXY, out=tmp_path / f"d{order}", subset=SUBSET)
        thetas.append((tmp_path / f"d{order}" / "theta.csv").read_text())
    assert thetas[0] != thetas[1]


def test_unknown_strategy_and_impossible_budget_fail_clearly(lat, tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown strategy"):
        run_search(replace(TINY, strategy="nope"), lat, PROXY, out=tmp_path / "x", subset=SUBSET)
    too_tight = lat.min_max_us()[0] / 1000 * 0.5
    with pytest.raises(ValueError, match="max-latency-ms"):
        run_search(replace(TINY, strategy="random", max_latency_ms=too_tight), lat, PROXY,
                   out=tmp_path / "y", subset=SUBSET)  # fmt: skip


def test_darts_second_order_gradient_matches_the_exact_unrolled_derivative() -> None:
    # DARTS eq. 7: d/dα L_val(w − ξ(∇w L_train(w, α) + wd·w), α). The strategy approximates the
    # mixed second derivative by a central finite difference; here autograd differentiates through
    # the virtual step exactly, on a small smooth problem in float64.
    from search.strategies.darts import unrolled_alpha_grad

    g = torch.Generator().manual_seed(0)
    A, B = torch.randn(3, 2, generator=g, dtype=torch.float64), torch.randn(3, 2, generator=g, dtype=torch.float64)
    w = torch.randn(3, generator=g, dtype=torch.float64, requires_grad=True)
    alpha = torch.randn(2, generator=g, dtype=torch.float64, requires_grad=True)
    xi, wd = 0.05, 3e-4

    def l_train(w_: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return (torch.tanh(w_) * (A @ torch.softmax(a, 0))).sum() ** 2 + (w_**2).sum() * torch.sigmoid(a[0])

    def l_val(w_: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return (torch.sin(w_) * (B @ torch.softmax(a, 0))).sum() + 0.5 * (w_**2).sum() * a[1] ** 2

    (gw,) = torch.autograd.grad(l_train(w, alpha), w, create_graph=True)
    w_virtual = w - xi * (gw + wd * w)
    (exact,) = torch.autograd.grad(l_val(w_virtual, alpha), alpha)

    w_before = w.detach().clone()
    approx, (val,) = unrolled_alpha_grad(
        [w], alpha, lambda with_alpha: l_train(w, alpha if with_alpha else alpha.detach()),
        lambda: (l_val(w, alpha),), xi, wd,
    )  # fmt: skip
    torch.testing.assert_close(approx, exact, rtol=1e-5, atol=1e-7)
    assert torch.equal(w.detach(), w_before)  # the weights are restored
    assert val.item() == pytest.approx(l_val(w_virtual, alpha).item())
