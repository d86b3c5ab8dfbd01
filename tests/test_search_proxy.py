"""The default proxy sees every candidate (each layer's input ≥ its largest kernel, a width floor
per group), names round-trip and the LUT spaces keep their hashes; a supernet collapse is made
visible in the log and judged at the end of a run; the cross-device verdict per device."""

from __future__ import annotations

import json
import logging
import math

import pytest

from search.crossdevice import markdown, reference_arch, verdicts
from search.latency import LatencyModelError, check_proxy_space
from search.space import get_space, list_spaces, proxy_space, reduced_strides
from search.space.__main__ import main as space_main
from search.strategies.common import COLLAPSE_RATIO, CollapseWatch


@pytest.mark.parametrize("family", list_spaces())
def test_the_default_proxy_lets_every_kernel_see_its_input(family: str) -> None:
    target = get_space(family)
    proxy = proxy_space(target)
    assert get_space(proxy.name) == proxy  # the name round-trips
    check_proxy_space(target, proxy)  # same layers, candidates; strides only lowered
    layers = proxy.layers()
    assert len(layers) == target.num_layers
    assert min(layer.h for layer in layers) >= proxy.max_kernel  # no kernel-blind layer
    assert min(layer.c_in for layer in layers) >= 16  # ≥ 8 channels per group of a g = 2 conv
    # the old proxy at the LUT's strides: the late layers see 2×2 and 1×1 maps
    plain = get_space(f"{family}-r32-w0.25")
    assert min(layer.h for layer in plain.layers()) < plain.max_kernel


def test_reduced_strides_keep_the_earliest_downsampling() -> None:
    assert reduced_strides(get_space("fbnet-r32")) == (2, 1, 2, 1, 1, 1, 1, 1)
    assert reduced_strides(get_space("proxyless_mobile-r32")) == (2, 2, 1, 1, 1, 1, 1)
    assert reduced_strides(get_space("fbnet")) == get_space("fbnet").published_strides  # 224: nothing to drop
    assert proxy_space(get_space("fbnet"), resolution=224, width=1.0).name == "fbnet-f16"


def test_published_spaces_keep_their_names_and_hashes() -> None:
    # LUT metadata records these hashes; a proxy's fields must not change them
    assert get_space("fbnet").hash() == "45dc4f346cbdf097"
    assert get_space("proxyless_mobile").hash() == "9a60cf6163a2c5d3"
    assert get_space("fbnet-r32-w0.25-s21222121").name == "fbnet-r32-w0.25"  # published strides: no suffix
    with pytest.raises(ValueError, match="-s lists the stem"):
        get_space("fbnet-r32-s212")


def test_a_proxy_may_lower_strides_but_never_raise_them() -> None:
    with pytest.raises(LatencyModelError, match="no stride may grow"):
        check_proxy_space(get_space("fbnet-r32-w0.25-s21211111"), get_space("fbnet-r32-w0.25"))


def test_space_info_lists_each_layers_input_and_the_kernel_blind_layers(capsys) -> None:
    assert space_main(["info", "--space", "fbnet", "--proxy", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert len(info["input_sizes"]) == 22 and info["kernel_blind_layers"] == []
    assert all(row["sees_kernels"] for row in info["layers"])
    assert space_main(["info", "--space", "fbnet-r32-w0.25"]) == 0
    out = capsys.readouterr().out
    assert "layers [6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21] see inputs smaller" in out


def _rows(accs: list[float]) -> list[dict]:
    return [{"phase": "warmup", "train_acc": 0.3}] + [{"phase": "search", "train_acc": a} for a in accs]


def test_collapse_watch_adds_the_peak_to_each_row_and_judges_the_end(caplog) -> None:
    watch, seen = CollapseWatch(), []
    on_epoch = watch.wrap(seen.append)
    for row in _rows([0.6, 0.64, 0.13, 0.14]):
        on_epoch(row)
    assert math.isnan(seen[0]["train_acc_peak"])  # warm-up does not count
    assert [r["train_acc_peak"] for r in seen[1:]] == [0.6, 0.64, 0.64, 0.64]
    assert seen[3]["train_acc_vs_peak"] == pytest.approx(0.13 / 0.64)
    with caplog.at_level(logging.WARNING):
        v = watch.verdict()
    assert v["collapsed"] and v["train_acc_final_vs_peak"] == pytest.approx(0.14 / 0.64)
    assert "collapsed" in caplog.text
    # a dip that recovers to within COLLAPSE_RATIO of the peak is not a collapse at the end
    watch = CollapseWatch()
    for row in _rows([0.6, 0.2, 0.58]):
        watch.row(row)
    v = watch.verdict()
    assert not v["collapsed"] and v["train_acc_worst_vs_peak"] == pytest.approx(0.2 / 0.6)
    assert 0.58 / 0.6 >= COLLAPSE_RATIO


def _report(pred: list[list[float]], accs: list[float]) -> dict:
    labels = ["a", "b", "c"]
    return {"luts": labels, "strategy": "fbnet", "predicted_us": pred, "measured_us": [[None] * 3] * 3,
            "notes": {}, "target_frac": None, "reference": "fbnet_b", "reference_us": [1000.0, 2000.0, 3000.0],
            "searches": [{"target_latency_us": 1000.0 * (i + 1), "trained_test_accuracy": a,
                          "trained_test_accuracies": [a, a], "trained_epochs": 10} for i, a in enumerate(accs)]}  # fmt: skip


def test_verdict_says_whether_and_by_how_much_the_own_arch_wins() -> None:
    # columns: LUT a, b, c; rows: the arch searched on a, b, c
    pred = [[900.0, 2400.0, 3000.0],
            [1000.0, 1800.0, 2700.0],
            [1200.0, 2000.0, 3300.0]]  # fmt: skip
    report = _report(pred, [0.9, 0.85, 0.8])
    v = verdicts(report)
    assert v["a"]["own_wins"] and v["a"]["margin"] == pytest.approx(1000 / 900 - 1) and v["a"]["rival"] == "b"
    assert v["b"]["own_wins"] and v["b"]["margin"] == pytest.approx(2000 / 1800 - 1)
    assert not v["c"]["own_wins"] and v["c"]["rival"] == "b" and v["c"]["margin"] == pytest.approx(2700 / 3300 - 1)
    report["verdicts"] = v
    md = markdown(report)
    assert "the own arch wins on 2 of 3 devices" in md
    assert "0.90× fbnet_b" in md  # the arch searched on a, on a: 900 µs against the reference's 1000
    assert "on c its own arch does not win" in md


def test_reference_arch_is_the_named_arch_in_the_luts_space() -> None:
    ref = reference_arch("fbnet_b", "fbnet-r32-w0.25")
    assert ref.space == "fbnet-r32-w0.25" and len(ref.blocks) == 22
    with pytest.raises(ValueError, match="not of"):
        reference_arch("fbnet_b", "proxyless_mobile")


def test_the_report_leads_with_test_accuracy_and_says_when_the_supernet_collapsed() -> None:
    from search.run import accuracy_line

    summary = {"test_accuracy": 0.8, "arch_split_accuracy": 0.85, "trained_test_accuracy": 0.95, "trained_epochs": 10,
               "supernet": {"collapsed": False}}  # fmt: skip
    line = accuracy_line(summary)
    assert line.index("0.9500") < line.index("0.8000") < line.index("0.8500")
    assert "fitted on, not held out" in line and "collapsed" not in line
    summary["supernet"] = {"collapsed": True, "train_acc_final": 0.14, "train_acc_final_vs_peak": 0.22,
                           "train_acc_peak": 0.64}  # fmt: skip
    assert "warning: the supernet collapsed (train accuracy ended at 0.140, 22% of its post-warm-up peak 0.640)" in (
        accuracy_line(summary))
