"""`bench.supernet_ranking`: archs of one latency, each scored with the searched supernet and
trained from scratch, and the rank correlation of the two (tiny settings)."""

from __future__ import annotations

import itertools
import json

import pytest

from bench import supernet_ranking

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.slow
def test_ranking_bench_scores_archs_of_one_latency_both_ways(tmp_path, synthetic_lut, capsys) -> None:
    lut = synthetic_lut(tmp_path / "luts", "rankdev")
    png = tmp_path / "rank.png"
    argv = ["--lut", str(lut.path), "--archs", "4", "--tolerance", "0.2", "--train-epochs", "1", "--subset", "48",
            "--epochs", "1", "--warmup-epochs", "0", "--plot", str(png), "--json"]  # fmt: skip
    assert supernet_ranking.main(argv) == 0
    out = capsys.readouterr().out
    report = json.loads(out.strip().splitlines()[-1])
    rows = report["archs"]
    assert len(rows) == 4 and len({tuple(r["blocks"]) for r in rows}) == 4
    assert all(abs(r["predicted_latency_us"] / report["target_us"] - 1) <= 0.2 for r in rows)
    # Kendall τ (no ties in the pairs counted here, or tie-corrected by scipy) against a direct count
    sup = [r["supernet_test_accuracy"] for r in rows]
    scr = [r["scratch_test_accuracy"] for r in rows]
    pairs = list(itertools.combinations(range(4), 2))
    signs = [(sup[i] - sup[j]) * (scr[i] - scr[j]) for i, j in pairs]
    if all(s != 0 for s in signs):
        assert report["kendall_tau"] == pytest.approx(sum((s > 0) - (s < 0) for s in signs) / len(pairs))
    else:
        assert -1.0 <= report["kendall_tau"] <= 1.0 or report["kendall_tau"] != report["kendall_tau"]
    assert report["scratch_spread"] == pytest.approx(max(scr) - min(scr))
    assert "Kendall τ" in out and png.stat().st_size > 0
