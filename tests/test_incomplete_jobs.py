"""A job with failed ops is no LUT: `profiler.run` exits 1 with the count, `lut list` shows the
job as incomplete, the default LUT stays the last complete one; --allow-failed publishes it."""

from __future__ import annotations

import json

import pytest

from lut import load_lut
from lut.__main__ import main as lut_main
from profiler.export import ExportCache
from profiler.run import main as run_main
from profiler.runtimes import get_runtime

pytestmark = pytest.mark.slow  # exports and times a few ops on the host

SPACE = "fbnet-r32-w0.35"


def test_failed_ops_exit_nonzero_and_stay_incomplete(tmp_path, capsys):
    out, cache = tmp_path / "luts", tmp_path / "exports"
    args = ["--device", "host", "--runtime", "onnxruntime", "--space", SPACE, "--ops-limit", "2", "--rounds", "1",
            "--runs", "2", "--warmup", "1", "--out", str(out), "--cache-dir", str(cache), "--no-progress", "--json"]
    assert run_main(args) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    victim = sorted(load_lut(first["lut_dir"]).table.index)[0]
    ec = ExportCache(get_runtime("onnxruntime"), cache)
    ec.path(victim).unlink()  # as if its export had failed: the marker is what a failure leaves
    (ec.dir / f"{victim}.failed.txt").write_text("ExportError: unsupported operator foo")

    assert run_main(args) == 1
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["num_failed"] == 1 and "1 of " in res["error"] and res["incomplete"].endswith(".partial")
    runtime_dir = load_lut(first["lut_dir"]).path.parent
    assert load_lut(runtime_dir).path.name == "v1"  # search.run / lut predict / compare still get v1
    assert lut_main(["list", "--root", str(out)]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert any(" incomplete " in line for line in listing) and any(" complete " in line for line in listing)

    assert run_main([*args, "--allow-failed"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["num_failed"] == 1 and res["lut_dir"].endswith("v2") and res["skipped"] > 0
