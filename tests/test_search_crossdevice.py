"""`search.crossdevice`: a search per LUT and the N×N table of every found arch on every LUT
(predicted by each LUT, measured end to end where the target is this host)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from dataclasses import replace

import pytest

from lut.store import load_lut
from search.crossdevice import crossdevice, target_of
from search.latency import LatencyModel
from search.space import get_arch, get_space, load_arch
from search.strategies import SearchConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SPACE = "fbnet-r32-w0.25"
# A strong additive latency term and a few θ steps: each search leaves its LUT's slow blocks.
CFG = SearchConfig(epochs=1, warmup_epochs=0, batch_size=16, w_fraction=0.5, num_samples=2, recalib_batches=1,
                   latency_loss="add", lambda_lat=300.0, theta_lr=0.3, entropy_weight=0.0)  # fmt: skip
K3 = ("k3_e1", "k3_e1_g2", "k3_e3", "k3_e6")
K5 = ("k5_e1", "k5_e1_g2", "k5_e3", "k5_e6")


@pytest.fixture(scope="module")
def two_devices(tmp_path_factory, synthetic_lut) -> list[LatencyModel]:
    """Device A runs 3×3 kernels 20× slower, device B 5×5 kernels: opposite preferences."""
    root = tmp_path_factory.mktemp("luts")
    a = synthetic_lut(root, "devA", space=SPACE, scale={b: 20.0 for b in K3}, runtime="onnxruntime")
    b = synthetic_lut(root, "devB", space=SPACE, scale={b: 20.0 for b in K5}, runtime="onnxruntime")
    return [LatencyModel.from_lut(a), LatencyModel.from_lut(b)]


@pytest.mark.slow
@pytest.mark.stochastic
def test_each_lut_gets_its_own_arch_and_the_table_is_every_arch_on_every_lut(
    two_devices, tmp_path, seed: int, record_property
) -> None:
    kw = {"proxy": lambda lat: get_space(SPACE), "data": "digits", "subset": 48, "train_epochs": 1}
    report = crossdevice(two_devices, replace(CFG, seed=seed), tmp_path, search_kw=kw, measure=False, reference=None,
                         seeds=(0,))  # fmt: skip
    labels = report["luts"]
    assert labels == ["devA_onnxruntime-t1", "devB_onnxruntime-t1"]
    archs = [load_arch(s["arch_path"]) for s in report["searches"]]
    # every cell is that LUT's own prediction of that arch
    for i, arch in enumerate(archs):
        for j, lat in enumerate(two_devices):
            assert report["predicted_us"][i][j] == pytest.approx(lat.predict_us(arch))
    # device-targeted: on each LUT its own arch is the faster one (FBNet's Table 4)
    pred = report["predicted_us"]
    record_property("pred", pred)
    record_property("k3_counts", [sum(b in K3 for b in a.blocks) for a in archs])
    assert pred[0][0] < pred[1][0] and pred[1][1] < pred[0][1], pred
    assert report["own_arch_fastest"] == {labels[0]: True, labels[1]: True}
    assert all(v["own_wins"] and v["margin"] > 0 for v in report["verdicts"].values())
    assert sum(b in K3 for b in archs[0].blocks) < sum(b in K3 for b in archs[1].blocks)
    assert all(report["searches"][i]["trained_test_accuracy"] is not None for i in range(2))
    with (tmp_path / "crossdevice.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and {r["measured_us"] for r in rows} == {""}
    assert float(rows[0]["predicted_vs_own_arch"]) == pytest.approx(1.0)  # A's arch on A
    md = (tmp_path / "crossdevice.md").read_text()
    assert "devA_onnxruntime-t1" in md and "not measured" in md
    assert (tmp_path / "crossdevice.png").stat().st_size > 0


def test_where_an_arch_can_be_measured(two_devices, tmp_path) -> None:
    lat = two_devices[0]
    assert target_of(lat, {}) == "host"  # the synthetic LUTs say they were measured on this host
    assert target_of(lat, {"devA": "127.0.0.1:5555"}) == "127.0.0.1:5555"
    from pathlib import Path

    from lut.formats import import_file

    data = Path(__file__).parent / "data" / "reference" / "hwnasbench" / "hwnasbench_fbnet_lut_pixel3.csv"
    (imported,) = import_file(data, "hwnasbench", root=tmp_path)
    phone = LatencyModel.from_lut(load_lut(imported))
    assert target_of(phone, {}) is None  # a published phone table: nothing to run it on here
    assert target_of(phone, {"pixel3-hwnasbench": "emulator-5554"}) == "emulator-5554"


@pytest.mark.slow
def test_cli_measures_host_luts_end_to_end_with_a_target_per_lut(two_devices, tmp_path) -> None:
    cmd = [sys.executable, "-m", "search.crossdevice", "--lut", str(two_devices[0].lut.path),
           "--lut", str(two_devices[1].lut.path), "--out", str(tmp_path / "x"), "--subset", "48",
           "--epochs", "1", "--warmup-epochs", "0", "--batch-size", "16", "--w-fraction", "0.5",
           "--target-frac", "0.5", "--theta-lr", "0.3", "--entropy-weight", "0",
           "--train-epochs", "0", "--recalib-batches", "1", "--rounds", "1", "--torch-threads", "1",
           "--json"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    measured = report["measured_us"]
    assert all(v is not None and v > 0 for row in measured for v in row), report["notes"]
    assert set(report["notes"].values()) == {"measured on host"}
    assert "Measured (end to end, median)" in (tmp_path / "x" / "crossdevice.md").read_text()
    # --target-frac: each LUT's search aimed at the same fraction of its own span
    for lat, search in zip(two_devices, report["searches"]):
        assert search["target_latency_us"] == pytest.approx(lat.span_us(0.5))


@pytest.mark.slow
def test_each_lut_targets_the_reference_arch_and_found_archs_train_over_two_seeds(two_devices, tmp_path) -> None:
    """The same relative budget on every LUT: the soft target is FBNet-B's latency on that LUT, and
    the cells are read against it; each found arch is trained once per seed, on the same class
    subset its search used."""
    cfg = replace(CFG, latency_loss=None, lambda_lat=0.1)
    kw = {"proxy": lambda lat: get_space(SPACE), "data": "digits", "subset": 48, "train_epochs": 1,
          "data_options": {"classes": 6}}  # fmt: skip
    report = crossdevice(two_devices, cfg, tmp_path, search_kw=kw, measure=False, seeds=(0, 1))
    for label in report["luts"]:
        assert len(json.loads((tmp_path / label / "arch.json").read_text())["info"]["classes"]) == 6
    ref_blocks = get_arch("fbnet_b").blocks
    for lat, search, ref_us in zip(two_devices, report["searches"], report["reference_us"]):
        assert ref_us == pytest.approx(lat.predict_us(ref_blocks))
        assert search["target_latency_us"] == pytest.approx(ref_us)
        accs = search["trained_test_accuracies"]
        assert len(accs) == 2 and search["trained_test_accuracy"] == pytest.approx(sum(accs) / 2)
    assert set(report["verdicts"]) == set(report["luts"])
    md = (tmp_path / "crossdevice.md").read_text()
    assert "soft target at fbnet_b's latency" in md and "× fbnet_b" in md and "Diagonal: the own arch wins on" in md
    with (tmp_path / "crossdevice.csv").open() as f:
        rows = list(csv.DictReader(f))
    ratio = report["predicted_us"][0][0] / report["reference_us"][0]
    assert float(rows[0]["predicted_vs_reference"]) == pytest.approx(ratio, rel=1e-4)
