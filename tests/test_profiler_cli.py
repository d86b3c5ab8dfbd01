"""`python -m profiler.run` end to end in a subprocess, then `python -m lut list/show`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip


@pytest.mark.slow
def test_cli_builds_resumable_lut_and_lut_cli_reads_it(tmp_path: Path) -> None:
    env = {**os.environ, "HWNAS_CACHE": str(tmp_path / "cache")}
    out = tmp_path / "luts"
    cmd = ["profiler.run", "--device", "host", "--space", "fbnet-r32-w0.35", "--runtime", "onnxruntime",
           "--ops-limit", "2", "--rounds", "2", "--runs", "3", "--warmup", "1", "--out", str(out),
           "--json", "--no-progress"]  # fmt: skip
    first = _run(cmd, env)
    assert first.returncode == 0, first.stderr
    res = json.loads(first.stdout.strip().splitlines()[-1])
    assert {"lut_dir", "num_ops", "num_failed", "elapsed_s"} <= set(res)
    assert res["num_ops"] == 2 and res["num_failed"] == 0 and res["exported"] > 0
    assert Path(res["lut_dir"]).name == "v1"

    second = _run(cmd, env)  # cached exports: nothing exported, a new version with a parent
    assert second.returncode == 0, second.stderr
    res2 = json.loads(second.stdout.strip().splitlines()[-1])
    assert res2["exported"] == 0 and Path(res2["lut_dir"]).name == "v2"
    assert "0 exported" in second.stderr

    third = _run([*cmd, "--skip-existing"], env)  # up to date: v2 is reported, nothing measured
    assert third.returncode == 0, third.stderr
    res3 = json.loads(third.stdout.strip().splitlines()[-1])
    assert res3["reused"] and res3["lut_dir"] == res2["lut_dir"] and res3["num_ops"] == 2
    changed = [*cmd[: cmd.index("--runs") + 1], "4", *cmd[cmd.index("--runs") + 2 :], "--skip-existing"]
    fourth = _run(changed, env)  # another protocol: measured again
    assert fourth.returncode == 0, fourth.stderr
    res4 = json.loads(fourth.stdout.strip().splitlines()[-1])
    assert not res4["reused"] and Path(res4["lut_dir"]).name == "v3"
    fifth = _run([*changed, "--cold-mib", "0.5"], env)  # cold copies of another size: another protocol
    assert fifth.returncode == 0, fifth.stderr
    res5 = json.loads(fifth.stdout.strip().splitlines()[-1])
    assert not res5["reused"] and json.loads((Path(res5["lut_dir"]) / "meta.json").read_text())[
        "protocol"]["cold_bytes"] == 1 << 19

    listing = _run(["lut", "list", "--root", str(out)], env)
    assert listing.returncode == 0 and "onnxruntime-t1" in listing.stdout
    shown = _run(["lut", "show", res2["lut_dir"], "--json"], env)
    meta = json.loads(shown.stdout)["meta"]
    assert meta["parent"] == 1 and meta["runtime"]["threads"] == 1 and meta["space"]["name"] == "fbnet-r32-w0.35"
    assert meta["runtime"]["op_profile_resolution_us"] is None  # onnxruntime: no per-layer times
    assert json.loads(shown.stdout)["provenance"] == "measured" and meta["protocol"]["cache"] == "mixed"
    assert meta["device"]["memory_semantics"].startswith("growth of this process")
    # load time and memory per op: the median over its op-rounds of what each round recorded
    table = pd.read_csv(Path(res2["lut_dir"]) / "table.csv", index_col="op_key")
    ok = table[table["status"] == "ok"]
    assert (ok["load_us"] > 0).all() and ok["memory_kb"].notna().all()
    human = _run(["lut", "show", res2["lut_dir"]], env)
    assert "load        median" in human.stdout and "memory      median" in human.stdout
    cmp = _run(["lut", "compare", res["lut_dir"], res2["lut_dir"], "--json"], env)
    assert json.loads(cmp.stdout)["load_us_ops_compared"] == 2  # the two space ops


def test_cli_rejects_what_a_runtime_cannot_do(tmp_path: Path) -> None:
    """Unknown runtimes and dtypes or layouts a runtime does not export are refused before any
    work, with the choices the registry knows."""
    env = {**os.environ, "HWNAS_CACHE": str(tmp_path / "cache")}
    bad = _run(["profiler.run", "--runtime", "tensorrt", "--out", str(tmp_path)], env)
    assert bad.returncode == 2 and "executorch" in bad.stderr and "onnxruntime" in bad.stderr
    int8 = _run(["profiler.run", "--runtime", "tflite", "--dtype", "int8", "--out", str(tmp_path)], env)
    assert int8.returncode == 2 and "tflite supports dtype fp32" in int8.stderr
    nhwc = _run(["profiler.run", "--runtime", "onnxruntime", "--layout", "nhwc", "--ops-limit", "1",
                 "--out", str(tmp_path), "--json", "--no-progress"], env)  # fmt: skip
    assert nhwc.returncode == 1 and "exports layout(s) nchw" in nhwc.stdout
    assert not any(tmp_path.rglob("v1"))
    # an unknown space: one message and exit 2, before the device's lock is taken
    space = _run(["profiler.run", "--runtime", "onnxruntime", "--space", "fbnet2", "--out", str(tmp_path)],
                 {**env, "HWNAS_LOCK_DIR": str(tmp_path / "locks")})  # fmt: skip
    assert space.returncode == 2 and space.stderr.count("unknown search space 'fbnet2'") == 1, space.stderr
    assert space.stdout == "" and not (tmp_path / "locks").exists()


def test_cli_rejects_unknown_runtime(capsys) -> None:
    from profiler.run import build_parser
    from profiler.runtimes import list_runtimes

    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["--runtime", "tensorrt"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    # the message names the rejected runtime and every one the user can pick instead
    assert "--runtime" in err and "'tensorrt'" in err
    assert all(name in err for name in list_runtimes())
    args = build_parser().parse_args(["--runtime", "tflite", "--device", "host", "--device", "emulator-5554"])
    assert args.device == ["host", "emulator-5554"] and args.rounds == 5
