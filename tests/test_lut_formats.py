"""Importers and exporters of lut.formats: published tables and round trips."""

from __future__ import annotations

import hashlib
import json
import math
import random
from pathlib import Path

import pandas as pd
import pytest
import yaml

from lut.__main__ import main as lut_main
from lut.formats import FORMATS, export_lut, get_format, import_file
from lut.formats.proxyless_yaml import parse_yaml_key, yaml_key
from lut.store import LutError, load_lut
from search.space import FBNET_BLOCKS, Arch, Op, arch_ops, get_space

SPACE = "fbnet-r32-w0.25"  # the synthetic_lut default

DATA = Path(__file__).resolve().parent / "data" / "reference"  # published tables, see its README
HWNAS = DATA / "hwnasbench"
PIXEL_YAML = DATA / "proxylessnas" / "pixel_trim.yaml"
# table.csv stores µs with 3 decimals: a sum of 26 ops is exact to 26 × 0.0005 µs
STORE_TOL_MS = 26 * 0.0005e-3


@pytest.mark.parametrize("device", ["pixel3", "raspi4", "edgegpu", "eyeriss", "fpga"])
def test_hwnasbench_import_reproduces_reference_totals(tmp_path: Path, device: str) -> None:
    (path,) = import_file(HWNAS / f"hwnasbench_fbnet_lut_{device}.csv", "hwnasbench", tmp_path)
    lut = load_lut(path)
    assert lut.space == "fbnet" and lut.device_id == f"{device}-hwnasbench"
    assert lut.meta["overhead_us"] == 0.0
    src = lut.meta["source"]
    data = (HWNAS / f"hwnasbench_fbnet_lut_{device}.csv").read_bytes()
    assert src["format"] == "hwnasbench" and src["sha256"] == hashlib.sha256(data).hexdigest()
    assert "HW-NAS-Bench" in src["citation"]
    assert any("cifar100" in n and "do not match" in n for n in lut.meta["import_notes"])
    ref = pd.read_csv(HWNAS / "hwnasbench_fbnet_reference_totals_example_ipynb.csv")
    ref = ref[ref["dataset"] == "ImageNet"]
    assert len(ref) == 3
    for _, row in ref.iterrows():
        blocks = [FBNET_BLOCKS[int(i)] for i in row["arch_op_idx_list"].split()]
        arch = Arch("fbnet", blocks, head_channels=1984)
        predicted_ms = lut.predict_us([op.key for op in arch_ops(arch)]) / 1000.0
        assert predicted_ms == pytest.approx(row[f"{device}_latency_ms"], abs=STORE_TOL_MS)


def test_hwnasbench_pool_fc_is_avgpool_plus_fc(tmp_path: Path) -> None:
    csv = HWNAS / "hwnasbench_fbnet_lut_pixel3.csv"
    (path,) = import_file(csv, "hwnasbench", tmp_path)
    df = pd.read_csv(csv, dtype={"layer_index": str})
    img = df[df["dataset"] == "ImageNet"]
    expected_us = 1000 * img[img["layer_index"].isin(["avgpool", "fc"])]["latency_ms"].sum()
    key = get_space("fbnet").fixed_ops()["classifier"].key
    assert load_lut(path).table.at[key, "median_us"] == pytest.approx(expected_us, abs=1e-3)


def test_proxyless_yaml_import(tmp_path: Path) -> None:
    (path,) = import_file(PIXEL_YAML, "proxyless_yaml", tmp_path)
    lut = load_lut(path)
    assert lut.space == "proxyless_mobile" and lut.device_id == "pixel1-proxylessnas"
    space = get_space("proxyless_mobile")
    lut.check_coverage([op.key for op in space.unique_ops()])  # every op of the space
    raw = yaml.safe_load(PIXEL_YAML.read_text())
    stem = raw["Conv-input:224x224x3-output:112x112x32"]
    row = lut.table.loc[space.fixed_ops()["stem"].key]
    assert row["median_us"] == pytest.approx(1000 * stem["mean"], abs=1e-3)
    # one published value per op: the row describes that one sample; the source's own run count
    # and spread are kept as published
    assert row["n"] == 1 and row["std_us"] == 0.0
    key = space.fixed_ops()["stem"].key
    assert (lut.samples["op_key"] == key).sum() == 1
    pub = lut.meta["published_stats"][key]
    assert pub["n"] == stem["count"] and pub["std_us"] == pytest.approx(1000 * math.sqrt(stem["var"]), abs=1e-3)
    assert lut.provenance == "imported" and lut.meta["provenance"] == "imported"
    ok = lut.table[lut.table["status"] == "ok"]
    counts = lut.samples.groupby("op_key").size()
    assert (counts.reindex(ok.index) == ok["n"]).all()  # every row's n is its number of samples
    mb = Op("mb_k5_e6", 24, 56, 56, 40, 2).key
    assert lut.table.at[mb, "median_us"] == pytest.approx(
        1000 * raw["expanded_conv-input:56x56x24-output:28x28x40-expand:6-kernel:5-stride:2-idskip:0"]["mean"], abs=1e-3)
    # the two stem-block variants with kernels 5 and 7 are not in our space: skipped, with a note
    notes = lut.meta["import_notes"]
    assert sum("skipped" in n for n in notes) == 2
    assert (lut.table["status"] == "identity").sum() == sum(op.is_identity for op in space.unique_ops())


@pytest.mark.parametrize(
    "op,role",
    [(Op("mb_k7_e3", 40, 28, 28, 80, 2), None), (Op("mb_k3_e6", 96, 14, 14, 96, 1), None),
     (Op("k5_e1_g2", 24, 56, 56, 32, 2), None), (Op("skip", 16, 112, 112, 24, 2), None),
     (Op("conv3x3_relu6", 3, 224, 224, 32, 2), "stem"), (Op("pool_fc", 1280, 7, 7, 1000, 1), "classifier")],
)  # fmt: skip
def test_yaml_key_round_trip(op: Op, role: str | None) -> None:
    key = yaml_key(op, role)
    parsed = parse_yaml_key(key)
    assert parsed["input"] == (op.h, op.w, op.c_in)
    assert parsed["output"][-1] == op.c_out
    if op.block.startswith("mb_"):
        assert parsed["op"] == "expanded_conv"
        assert parsed["idskip"] == int(op.c_in == op.c_out and op.stride == 1)


def test_yaml_key_matches_published_grammar() -> None:
    op = Op("mb_k5_e6", 24, 56, 56, 40, 2)
    assert yaml_key(op) == "expanded_conv-input:56x56x24-output:28x28x40-expand:6-kernel:5-stride:2-idskip:0"
    with pytest.raises(ValueError, match="malformed"):
        parse_yaml_key("expanded_conv-input56x56x24")


@pytest.mark.parametrize("fmt", sorted(n for n, f in FORMATS.items() if f.can_export))
def test_export_import_round_trip_keeps_predictions(tmp_path: Path, fmt: str, synthetic_lut) -> None:
    lut = synthetic_lut(tmp_path / "a", "devA", overhead_us=7.0)
    out = export_lut(lut, fmt, tmp_path / f"lut{get_format(fmt).suffixes[0]}")
    (path,) = import_file(out, fmt, tmp_path / "b", space=SPACE, device_id="devA-copy")
    back = load_lut(path)
    assert back.meta["source"]["format"] == fmt
    space = get_space(SPACE)
    rng = random.Random(0)
    for _ in range(10):
        arch = Arch(SPACE, [rng.choice(space.candidates(l)) for l in space.layers()])
        keys = [op.key for op in arch_ops(arch)]
        assert back.predict_us(keys) == pytest.approx(lut.predict_us(keys), abs=0.01)


def test_flat_csv_has_identity_columns(tmp_path: Path, synthetic_lut) -> None:
    lut = synthetic_lut(tmp_path, "devA")
    out = export_lut(lut, "flat_csv", tmp_path / "flat.csv")
    df = pd.read_csv(out)
    assert set(df["device_id"]) == {"devA"} and set(df["space"]) == {SPACE}
    assert len(df) == len(lut.table)
    ok = df[(df["status"] == "ok") & (df["block"] != "overhead")].set_index("op_key")
    for key in ok.index[:5]:
        assert ok.at[key, "latency_us"] == pytest.approx(lut.op_latency_us(key), abs=1e-3)


def test_errors_say_what_to_do(tmp_path: Path, synthetic_lut) -> None:
    lut = synthetic_lut(tmp_path, "devA")
    with pytest.raises(LutError, match="known formats"):
        get_format("nope")
    with pytest.raises(LutError, match="import only"):
        export_lut(lut, "hwnasbench", tmp_path / "x.csv")
    bad = tmp_path / "bad.yaml"
    bad.write_text("Conv-input:224x224x3-output:112x112x32: {count: 1}\n")
    with pytest.raises(LutError, match="no 'mean'"):
        import_file(bad, "proxyless_yaml", tmp_path / "store")
    with pytest.raises(LutError, match="no such file"):
        import_file(tmp_path / "missing.csv", "flat_csv", tmp_path / "store")


def test_cli_import_export(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = str(tmp_path / "luts")
    assert lut_main(["import", str(PIXEL_YAML), "--format", "proxyless_yaml", "--root", root, "--json"]) == 0
    (path,) = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    out = tmp_path / "back.yaml"
    assert lut_main(["export", path, "--format", "proxyless_yaml", "--out", str(out), "--root", root]) == 0
    exported = yaml.safe_load(out.read_text())
    original = yaml.safe_load(PIXEL_YAML.read_text())
    assert set(exported) <= set(original) and len(exported) == len(original) - 2
    for key, val in exported.items():
        assert val["mean"] == pytest.approx(original[key]["mean"], abs=1e-6)
        assert val["count"] == original[key]["count"]  # the published count passes through
