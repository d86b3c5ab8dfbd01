"""The LUT store: round trip, versions, corrupt files, schema versions, coverage, latency model."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lut import (
    SCHEMA_VERSION,
    LutCoverageError,
    LutError,
    list_luts,
    load_lut,
    parse_runtime_dir_name,
    runtime_dir_name,
    summarize,
    write_lut,
)
from lut.__main__ import main as lut_main
from lut.schema import TABLE_COLUMNS
from search.space import Op, overhead_op

DEVICE = "host-test-cpu-00000000"
SPACE = "fbnet-r32-w0.35"
RDIR = "onnxruntime-t1"


def _percentile(sorted_x: list[float], q: float) -> float:
    """Linear interpolation between order statistics, written out by hand."""
    pos = (len(sorted_x) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_x[lo] + (sorted_x[hi] - sorted_x[lo]) * (pos - lo)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_summarize_matches_independent_computation(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = list(rng.lognormal(5, 0.3, size=int(rng.integers(2, 60))))
    s = summarize(x)
    xs = sorted(x)
    assert s["n"] == len(x)
    assert s["median_us"] == pytest.approx(statistics.median(x))
    assert s["mean_us"] == pytest.approx(statistics.fmean(x))
    assert s["std_us"] == pytest.approx(statistics.stdev(x))
    assert s["min_us"] == min(x)
    assert s["p10_us"] == pytest.approx(_percentile(xs, 0.10))
    assert s["p90_us"] == pytest.approx(_percentile(xs, 0.90))


def test_summarize_single_sample_and_bad_input() -> None:
    assert summarize([7.0]) == {"median_us": 7.0, "mean_us": 7.0, "std_us": 0.0, "min_us": 7.0,
                                "p10_us": 7.0, "p90_us": 7.0, "n": 1}  # fmt: skip
    with pytest.raises(ValueError, match="non-empty"):
        summarize([])
    with pytest.raises(ValueError, match="finite"):
        summarize([1.0, float("nan")])


def test_runtime_dir_name_round_trips() -> None:
    assert runtime_dir_name("executorch", 1) == "executorch-t1"
    assert runtime_dir_name("tflite", 1, "int8") == "tflite-int8-t1"
    for args in [("executorch", "fp32", 1), ("onnxruntime", "int8", 4)]:
        assert parse_runtime_dir_name(runtime_dir_name(args[0], args[2], args[1])) == args


# --- a synthetic LUT ----------------------------------------------------------------------------
OPS = [
    Op("k3_e1", 8, 16, 16, 8, 1),
    Op("k3_e6", 8, 16, 16, 16, 2),
    Op("k5_e3", 16, 8, 8, 16, 1),
    Op("skip", 16, 8, 8, 16, 1),  # identity
    Op("k5_e6", 16, 8, 8, 16, 1),  # failed
]
BASE_US = {"k3_e1": 100.0, "k3_e6": 300.0, "k5_e3": 200.0, "overhead": 10.0}


def _synthetic(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    rng = np.random.default_rng(seed)
    timed = [op for op in OPS[:3]]
    timed += list({overhead_op(op).key: overhead_op(op) for op in timed}.values())
    rows, samples = [], []
    for op in timed:
        vals = BASE_US[op.block] * (1 + 0.01 * rng.standard_normal(12))
        samples += [(op.key, i // 6, i % 6, float(round(v, 3))) for i, v in enumerate(vals)]
        rows.append({"op_key": op.key, "block": op.block, "c_in": op.c_in, "h": op.h, "w": op.w,
                     "c_out": op.c_out, "stride": op.stride, "status": "ok",
                     **summarize([round(v, 3) for v in vals]), "error": ""})  # fmt: skip
    skip, bad = OPS[3], OPS[4]
    rows.append({"op_key": skip.key, "block": "skip", "c_in": 16, "h": 8, "w": 8, "c_out": 16,
                 "stride": 1, "status": "identity", "median_us": 0.0, "mean_us": 0.0, "std_us": 0.0,
                 "min_us": 0.0, "p10_us": 0.0, "p90_us": 0.0, "n": 0, "error": ""})  # fmt: skip
    rows.append({"op_key": bad.key, "block": "k5_e6", "c_in": 16, "h": 8, "w": 8, "c_out": 16,
                 "stride": 1, "status": "failed", "median_us": None, "mean_us": None, "std_us": None,
                 "min_us": None, "p10_us": None, "p90_us": None, "n": 0, "error": "export: boom"})  # fmt: skip
    meta = {
        "device": {"device_id": DEVICE, "kind": "host", "cpu_model": "Test CPU"},
        "runtime": {"name": "onnxruntime", "version": "1", "delegate": "cpu_ep", "threads": 1,
                    "core_mask": None, "dtype": "fp32"},  # fmt: skip
        "exporters": {"torch": "2"},
        "space": {"name": SPACE, "hash": "abc"},
        "protocol": {"rounds": 2, "runs": 6},
        "overhead_us": 10.0,
        "failed_ops": {bad.key: "export: boom"},
    }
    samples_df = pd.DataFrame(samples, columns=["op_key", "round", "sample", "latency_us"])
    samples_df["load_avg_1m"] = samples_df["round"] * 0.5
    return pd.DataFrame(rows), samples_df, meta


def _write(root: Path, **kw) -> Path:
    table, samples, meta = _synthetic()
    return write_lut(root, device_id=DEVICE, space=SPACE, runtime_dir=RDIR, table=table,
                     samples=samples, meta=meta, **kw)  # fmt: skip


def test_round_trip_and_versions(tmp_path: Path) -> None:
    table, samples, _ = _synthetic()
    v1 = _write(tmp_path)
    assert v1 == tmp_path / DEVICE / SPACE / RDIR / "v1"
    assert sorted(p.name for p in v1.iterdir()) == ["meta.json", "samples.csv.gz", "table.csv"]
    lut = load_lut(v1)
    assert (lut.version, lut.device_id, lut.space, lut.runtime["name"]) == (1, DEVICE, SPACE, "onnxruntime")
    assert lut.meta["schema_version"] == SCHEMA_VERSION and lut.meta["parent"] is None
    assert len(lut.meta["content_hash"]) == 64 and lut.meta["created_at"]
    assert list(lut.table.columns) == list(TABLE_COLUMNS[1:])
    assert list(lut.table.index) == sorted(table["op_key"])
    expected = table.set_index("op_key").loc[lut.table.index]
    np.testing.assert_allclose(lut.table["median_us"], expected["median_us"], atol=1e-3)
    assert lut.table.loc[OPS[4].key, "error"] == "export: boom"
    pd.testing.assert_frame_equal(lut.samples, samples, check_dtype=False)

    v2 = _write(tmp_path)  # re-profiling writes a new version whose parent is the previous one
    assert v2.name == "v2" and load_lut(v2).meta["parent"] == 1
    assert load_lut(tmp_path / DEVICE / SPACE / RDIR).version == 2  # runtime dir → latest
    assert load_lut(f"{DEVICE}/{SPACE}/{RDIR}/v1", root=tmp_path).version == 1
    assert load_lut(f"{DEVICE}/{SPACE}/{RDIR}", root=tmp_path).version == 2
    assert not [p for p in v1.parent.iterdir() if p.name.startswith(".tmp")]
    rows = list_luts(tmp_path)
    # 5 space ops (3 timed, 1 identity, 1 failed); the 2 overhead rows are not counted
    assert [(r["version"], r["parent"], r["ops"], r["failed"]) for r in rows] == [(1, None, 5, 1), (2, 1, 5, 1)]


def test_unknown_lut_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LutError, match="python -m lut list"):
        load_lut("nope/fbnet/executorch-t1", root=tmp_path)


def test_corrupt_table_is_rejected_with_path_and_reason(tmp_path: Path) -> None:
    v1 = _write(tmp_path)
    f = v1 / "table.csv"
    f.write_text('op_key,block\n"unterminated,\x00\n')
    with pytest.raises(LutError, match=r"table\.csv.*(hash|truncated|edited)") as e:
        load_lut(v1)
    assert str(f) in str(e.value)


def test_truncated_table_is_rejected(tmp_path: Path) -> None:
    v1 = _write(tmp_path)
    f = v1 / "table.csv"
    lines = f.read_text().splitlines(keepends=True)
    f.write_text("".join(lines[:-2]))
    with pytest.raises(LutError, match="truncated"):
        load_lut(v1)
    # without the hash (e.g. a hand-made LUT) the row count in meta still catches it
    meta = json.loads((v1 / "meta.json").read_text())
    del meta["file_hashes"], meta["meta_hash"]
    (v1 / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(LutError, match="truncated: 5 rows"):
        load_lut(v1)


def test_corrupt_columns_without_hash_are_rejected(tmp_path: Path) -> None:
    v1 = _write(tmp_path)
    meta = json.loads((v1 / "meta.json").read_text())
    del meta["file_hashes"], meta["counts"], meta["meta_hash"]
    (v1 / "meta.json").write_text(json.dumps(meta))
    table = pd.read_csv(v1 / "table.csv").drop(columns=["p90_us"])
    table.to_csv(v1 / "table.csv", index=False)
    with pytest.raises(LutError, match=r"table\.csv: corrupt table .*p90_us"):
        load_lut(v1)


@pytest.mark.parametrize("value", [0, 2, None, "1"])
def test_wrong_schema_version_is_rejected(tmp_path: Path, value) -> None:
    v1 = _write(tmp_path)
    meta = json.loads((v1 / "meta.json").read_text())
    meta["schema_version"] = value
    (v1 / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(LutError, match="schema_version .* not supported") as e:
        load_lut(v1)
    assert "meta.json" in str(e.value)


def test_edited_meta_is_rejected(tmp_path: Path) -> None:
    v1 = _write(tmp_path)
    meta = json.loads((v1 / "meta.json").read_text())
    assert load_lut(v1).meta["meta_hash"] == meta["meta_hash"]
    meta["protocol"]["rounds"] = 99  # e.g. another job's settings pasted in
    (v1 / "meta.json").write_text(json.dumps(meta, indent=2))
    with pytest.raises(LutError, match=r"meta\.json: content does not match its meta_hash"):
        load_lut(v1)
    del meta["meta_hash"]  # a version written before meta.json was hashed is read as it is
    (v1 / "meta.json").write_text(json.dumps(meta))
    assert load_lut(v1).meta["protocol"]["rounds"] == 99


def test_corrupt_meta_and_samples(tmp_path: Path) -> None:
    v1 = _write(tmp_path)
    (v1 / "samples.csv.gz").write_bytes((v1 / "samples.csv.gz").read_bytes()[:40])
    lut = load_lut(v1)  # samples load lazily
    with pytest.raises(LutError, match=r"samples\.csv\.gz"):
        _ = lut.samples
    (v1 / "meta.json").write_text('{"schema_version": 1, ')
    with pytest.raises(LutError, match="corrupt JSON"):
        load_lut(v1)


def test_coverage_lists_missing_and_failed_ops(tmp_path: Path) -> None:
    lut = load_lut(_write(tmp_path))
    absent = Op("k3_e3", 8, 16, 16, 8, 1).key
    new_shape = Op("k3_e1", 24, 4, 4, 24, 1)
    lut.check_coverage([OPS[0].key, OPS[3].key, Op("skip", 24, 4, 4, 24, 1).key])  # identity: no row needed
    with pytest.raises(LutCoverageError) as e:
        lut.check_coverage([OPS[0].key, absent, OPS[4].key, new_shape.key])
    assert e.value.missing == [absent, OPS[4].key, new_shape.key, overhead_op(new_shape).key]
    assert absent in str(e.value) and OPS[4].key in str(e.value)


def test_latency_model_subtracts_overhead_per_op_and_adds_it_once(tmp_path: Path) -> None:
    lut = load_lut(_write(tmp_path))
    t = lut.table
    ovh = lambda op: t.loc[overhead_op(op).key, "median_us"]  # noqa: E731
    assert lut.overhead_us(8, 16, 16) == pytest.approx(ovh(OPS[0]))
    a = lut.op_latency_us(OPS[0].key)
    assert a == pytest.approx(t.loc[OPS[0].key, "median_us"] - ovh(OPS[0]))
    assert lut.op_latency_us(OPS[3].key) == 0.0
    assert lut.op_latency_us(OPS[1].key, "p90_us") == pytest.approx(t.loc[OPS[1].key, "p90_us"] - ovh(OPS[1]))
    with pytest.raises(LutCoverageError):
        lut.op_latency_us(OPS[4].key)
    with pytest.raises(LutCoverageError):
        lut.overhead_us(3, 5, 5)
    keys = [OPS[0].key, OPS[1].key, OPS[2].key, OPS[3].key]
    expected = sum(t.loc[k, "median_us"] - ovh(parse) for k, parse in zip(keys[:3], OPS[:3])) + ovh(OPS[0])
    assert lut.predict_us(keys) == pytest.approx(expected)


def test_lut_cli_list_and_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write(tmp_path)
    _write(tmp_path)
    assert lut_main(["list", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert DEVICE in out and RDIR in out and "version" in out and len(out.strip().splitlines()) == 3
    assert lut_main(["show", f"{DEVICE}/{SPACE}/{RDIR}/v1", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "v1" in out and OPS[0].key in out and "export: boom" in out
    assert lut_main(["show", str(tmp_path / DEVICE / SPACE / RDIR), "--json"]) == 0
    data = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert data["meta"]["version"] == 2 and len(data["table"]) == 7
    assert lut_main(["show", "missing/x/y", "--root", str(tmp_path)]) == 2
    assert "no LUT" in capsys.readouterr().err


def test_provenance_is_recorded_or_inferred(tmp_path: Path, synthetic_lut, capsys: pytest.CaptureFixture) -> None:
    from lut.store import provenance_of

    lut = synthetic_lut(tmp_path)
    assert lut.provenance == "synthetic" and lut.meta["provenance"] == "synthetic"
    assert lut_main(["show", str(lut.path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["provenance"] == "synthetic"
    assert lut_main(["list", "--root", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["provenance"] == "synthetic"
    # LUTs written before provenance was recorded: inferred from their metadata
    assert provenance_of({"device": {"device_id": "host-x"}}) == "measured"
    assert provenance_of({"device": {"manufacturer": "hwnas", "model": "Loopback"}}) == "loopback"
    assert provenance_of({"device": {}, "source": {"format": "hwnasbench"}}) == "imported"
    with pytest.raises(LutError, match="provenance must be one of"):
        write_lut(tmp_path, device_id="d", space="fbnet", runtime_dir="x-t1", table=lut.table.reset_index(),
                  samples=lut.samples, meta={**lut.meta, "provenance": "guessed"})  # fmt: skip


def test_output_into_a_closed_pipe_ends_quietly(tmp_path: Path, synthetic_lut) -> None:
    import fcntl
    import os
    import subprocess
    import sys

    lut = synthetic_lut(tmp_path)
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)  # smaller than the output: the writer must wait
    proc = subprocess.Popen([sys.executable, "-m", "lut", "show", str(lut.path), "--json"],
                            stdout=write_end, stderr=subprocess.PIPE)  # fmt: skip
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        assert reader.read(10) == b'{"id": "sy'  # `| head -c 10`: the reader takes what it wants and goes
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and b"Traceback" not in err and b"BrokenPipe" not in err, err
