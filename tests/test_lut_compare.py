"""lut.compare on synthetic LUTs written through the store (no measurement involved)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from lut.__main__ import main as lut_main
from lut.compare import compare_luts
from lut.store import LutError

SPACE = "fbnet-r32-w0.25"  # 22 layers, tiny shapes (the synthetic_lut default)


def test_identical_luts_agree_everywhere(tmp_path: Path, synthetic_lut) -> None:
    a = synthetic_lut(tmp_path, seed=0)
    b = synthetic_lut(tmp_path, seed=0)  # version 2 of the same LUT, same numbers
    cmp = compare_luts(a, b)
    assert cmp.kind == "version"
    assert cmp.summary["geomean_ratio"] == pytest.approx(1.0, abs=1e-4)
    assert cmp.summary["spearman"] == pytest.approx(1.0)
    assert cmp.flips == []
    assert all(r["same"] for r in cmp.best_blocks)
    assert cmp.drift["ops_changed"] == 0


def test_ratios_against_an_independent_computation(tmp_path: Path, synthetic_lut) -> None:
    a = synthetic_lut(tmp_path, "devA", seed=1)
    b = synthetic_lut(tmp_path, "devB", seed=2, scale={"k5_e6": 3.0, "k3_e1": 0.5}, overhead_us=9.0)
    cmp = compare_luts(a, b)
    assert cmp.kind == "device"
    # independent: net latency = median - overhead median at the op's input shape, from the tables
    ta, tb = a.table, b.table

    def net(t: pd.DataFrame, key: str) -> float:
        r = t.loc[key]
        o = t[(t.block == "overhead") & (t.c_in == r.c_in) & (t.h == r.h) & (t.w == r.w)]
        return max(float(r.median_us) - float(o.median_us.iloc[0]), 0.0)

    keys = [k for k in ta.index if ta.at[k, "status"] == "ok" and ta.at[k, "block"] != "overhead"]
    ra = np.array([net(ta, k) for k in keys])
    rb = np.array([net(tb, k) for k in keys])
    geomean = math.exp(np.mean(np.log(rb / ra)))
    assert cmp.summary["num_ops"] == len(keys)
    assert cmp.summary["geomean_ratio"] == pytest.approx(geomean, rel=1e-9)
    assert cmp.summary["spearman"] == pytest.approx(stats.spearmanr(ra, rb).statistic, rel=1e-9)
    k5 = cmp.ops[cmp.ops.block == "k5_e6"]["ratio"]
    assert k5.between(2.7, 3.3).all()


def test_block_specific_slowdown_flips_order_and_best_block(tmp_path: Path, synthetic_lut) -> None:
    a = synthetic_lut(tmp_path, "devA", seed=1)
    # on B every k3 block is 4x slower: k5 variants become faster than their k3 twins
    slow = {b: 4.0 for b in ("k3_e1", "k3_e1_g2", "k3_e3", "k3_e6")}
    b = synthetic_lut(tmp_path, "devB", seed=2, scale=slow)
    cmp = compare_luts(a, b)
    assert cmp.flips, "a 4x slowdown of all k3 blocks must flip k3/k5 orders"
    for f in cmp.flips:
        assert f["faster_on_a"].startswith("k3") and not f["faster_on_b"].startswith("k3")
    changed = [r for r in cmp.best_blocks if not r["same"]]
    assert changed and all(r["a_pick_slowdown_on_b_pct"] > 0 for r in changed)


def test_different_spaces_refused(tmp_path: Path, synthetic_lut) -> None:
    a = synthetic_lut(tmp_path, "devA")
    b = synthetic_lut(tmp_path, "devB", space="fbnet-r32-w0.35")
    with pytest.raises(LutError, match="different spaces"):
        compare_luts(a, b)


def test_cli_compare_json_and_csv(tmp_path: Path, capsys: pytest.CaptureFixture, synthetic_lut) -> None:
    synthetic_lut(tmp_path, "devA", seed=1)
    synthetic_lut(tmp_path, "devB", seed=2, scale={"k5_e6": 2.0})
    a_id, b_id = f"devA/{SPACE}/executorch-t1", f"devB/{SPACE}/executorch-t1"
    rc = lut_main(["compare", a_id, b_id, "--root", str(tmp_path), "--json", "--out", str(tmp_path / "cmp")])
    assert rc == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("geomean_ratio", "spearman", "kendall", "flips", "best_blocks", "drift"):
        assert key in out
    ops = pd.read_csv(tmp_path / "cmp" / "ops.csv", index_col="op_key")
    assert len(ops) == out["num_ops"] and {"a_us", "b_us", "ratio"} <= set(ops.columns)


def test_drift_reports_changed_ops_and_meta(tmp_path: Path, synthetic_lut) -> None:
    a = synthetic_lut(tmp_path, "dev", seed=1)
    b = synthetic_lut(tmp_path, "dev", seed=1, scale={"k3_e6": 1.5})  # v2: one block slower
    b.meta["runtime"]["version"] = "test2"
    cmp = compare_luts(a, b)
    assert cmp.kind == "version"
    moved = {t["op_key"].split("-")[0] for t in cmp.drift["top_changes"]}
    assert moved == {"k3_e6"}
    assert cmp.drift["meta_diff"]["runtime.version"] == {"a": "test", "b": "test2"}
