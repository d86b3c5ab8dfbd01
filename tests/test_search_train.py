"""`python -m search.train`: shapes to train at, checkpoints that resume exactly, the outputs, bad
input, export + measurement through the profiler (host and loopback phone) beside the LUT's
prediction, and two-process data-parallel training under torchrun."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from lut.correction import predict_arch
from lut.store import load_lut
from search.checkpoint import METRIC_COLUMNS, CheckpointError, load_checkpoint
from search.data import load_data
from search.distributed import digest
from search.space import arch_ops, build_model, get_arch, get_space, load_arch
from search.train import main
from search.training import TrainConfig, train_arch, train_space_for, trained_arch

PROXY = "fbnet-r32-w0.25"
TRAIN_ARGS = ["--subset", "64", "--epochs", "2", "--batch-size", "16", "--seed", "1"]
FAST_MEASURE = ["--", "--rounds", "1", "--runs", "3", "--warmup", "1"]


@pytest.fixture(scope="module")
def run(tmp_path_factory, small_arch, write_synthetic_lut):
    """The small arch searched (as it were) on a synthetic LUT of `fbnet`, trained once on the
    proxy by the CLI (in-process): {root, arch_json, lut_dir, out, report}."""
    root = tmp_path_factory.mktemp("train")
    lut_dir = write_synthetic_lut(root / "luts", "fbnet")
    lut = load_lut(lut_dir)
    arch = replace(small_arch, info={"lut": {"path": str(lut_dir), "id": lut.id}, "proxy_space": PROXY})
    arch_json = root / "arch.json"
    arch_json.write_text(arch.to_json())
    out = root / "train"
    assert main(["--arch", str(arch_json), *TRAIN_ARGS, "--out", str(out), "--torch-threads", "1"]) == 0
    report = json.loads((out / "report.json").read_text())
    return {"root": root, "arch_json": arch_json, "lut_dir": lut_dir, "out": out, "report": report}


def _copy(run, tmp_path: Path) -> Path:
    out = tmp_path / "train"
    shutil.copytree(run["out"], out)
    return out


def _last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


# --- what is trained ---------------------------------------------------------------------------------
def test_train_space_defaults_to_the_proxy_and_scales_to_the_lut() -> None:
    c = get_arch("fbnet_c")
    assert train_space_for(c).name == PROXY  # no proxy recorded: r32-w0.25
    assert train_space_for(c, scale="lut").name == "fbnet"
    assert train_space_for(c, resolution=64).name == "fbnet-r64-w0.25"
    assert train_space_for(c, scale="lut", width=0.5).name == "fbnet-w0.5"
    searched = replace(c, info={"proxy_space": "fbnet-r48-w0.5"})
    assert train_space_for(searched).name == "fbnet-r48-w0.5"
    assert train_space_for(searched, resolution=64).name == "fbnet-r64-w0.5"
    with pytest.raises(ValueError, match="contradict"):
        train_space_for(c, scale="lut", proxy_space=PROXY)
    with pytest.raises(ValueError, match="does not match the LUT space"):
        train_space_for(c, proxy_space="proxyless_mobile-r32")
    a = get_arch("fbnet_a")  # head 1504: scaled with the width on a proxy, kept at the LUT's shapes
    assert trained_arch(a, get_space(PROXY)).head_channels == 376
    assert trained_arch(a, get_space("fbnet")) == a


def test_lut_scale_trains_the_ops_the_lut_measured() -> None:
    arch = get_arch("fbnet_96_035_1")
    trained = trained_arch(arch, train_space_for(arch, scale="lut"))
    keys = [o.key for o in arch_ops(trained)]
    assert keys == [o.key for o in arch_ops(arch)]
    net = build_model(trained, 10)
    assert net.ops[-1].fc.out_features == 10 and len(net.ops) == len(keys)


# --- checkpoints ---------------------------------------------------------------------------------------
def _small_run(small_arch, tmp_path, **kw):
    data = load_data("digits", resolution=32, subset=48)
    cfg = kw.pop("cfg", TrainConfig(epochs=3, batch_size=16, seed=2))
    return train_arch(small_arch.blocks, get_space(PROXY), data, cfg, **kw)


@pytest.mark.slow
def test_resume_ends_where_an_uninterrupted_run_ends(small_arch, tmp_path, one_torch_thread) -> None:
    straight = _small_run(small_arch, tmp_path, out=tmp_path / "a")

    def crash_after_second_epoch(row):
        if row["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _small_run(small_arch, tmp_path, out=tmp_path / "b", on_epoch=crash_after_second_epoch)
    assert load_checkpoint(tmp_path / "b" / "checkpoint.pt")["epoch"] == 2
    seen = []
    resumed = _small_run(small_arch, tmp_path, out=tmp_path / "b", resume=True, on_epoch=seen.append)
    assert [r["epoch"] for r in seen] == [2] and resumed["resumed_from_epoch"] == 2
    a, b = straight["model"].state_dict(), resumed["model"].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # bit for bit, buffers included
    assert resumed["weights_sha256"] == straight["weights_sha256"]

    def metrics(res):
        return [{k: v for k, v in r.items() if k != "epoch_s"} for r in res["history"]]

    assert metrics(resumed) == metrics(straight)
    rows = list(csv.DictReader((tmp_path / "b" / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2] and tuple(rows[0]) == METRIC_COLUMNS
    assert float(rows[2]["test_acc"]) == straight["test_accuracy"]
    lrs = [float(r["lr"]) for r in rows]  # warm-up (3 steps an epoch, 4 of warm-up), then the cosine
    assert lrs[0] == pytest.approx(TrainConfig(batch_size=16).peak_lr / 4) and lrs[0] < lrs[1] > lrs[2]


def test_resume_refuses_a_checkpoint_of_another_run(small_arch, tmp_path, one_torch_thread) -> None:
    _small_run(small_arch, tmp_path, out=tmp_path, cfg=TrainConfig(epochs=1, batch_size=16))
    other = ("k3_e6",) + small_arch.blocks[1:]
    data = load_data("digits", resolution=32, subset=48)
    with pytest.raises(CheckpointError, match=r"(?s)another architecture.*arch: checkpoint"):
        train_arch(other, get_space(PROXY), data, TrainConfig(epochs=1, batch_size=16), out=tmp_path, resume=True)
    with pytest.raises(CheckpointError, match=r"(?s)settings it was started with.*config"):
        train_arch(small_arch.blocks, get_space(PROXY), data, TrainConfig(epochs=2, batch_size=16),
                   out=tmp_path, resume=True)  # fmt: skip
    with pytest.raises(CheckpointError, match="no checkpoint"):
        train_arch(small_arch.blocks, get_space(PROXY), data, out=tmp_path / "empty", resume=True)


# --- the CLI -------------------------------------------------------------------------------------------
def test_cli_writes_checkpoint_metrics_model_and_report(run) -> None:
    out, report = run["out"], run["report"]
    for name in ("checkpoint.pt", "metrics.csv", "model.json", "model.pt", "report.json"):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert len(rows) == 2 and tuple(rows[0]) == METRIC_COLUMNS
    assert report["test_accuracy"] == float(rows[-1]["test_acc"])
    assert (report["train_space"], report["space"]) == (PROXY, "fbnet")
    assert (report["num_classes"], report["world_size"]) == (10, 1)
    assert report["checkpoint"] == str(out / "checkpoint.pt") and report["exports"] == []
    model_arch = load_arch(out / "model.json")
    assert model_arch.space == PROXY and model_arch.info["num_classes"] == 10
    assert model_arch.info["world_size"] == 1 and model_arch.info["lut_arch"]["space"] == "fbnet"
    net = build_model(model_arch, 10)
    net.load_state_dict(torch.load(out / "model.pt", weights_only=True))
    assert digest(net) == report["weights_sha256"]
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 2

    pred = report["prediction"]  # the LUT arch.json names, beside what was trained
    lut = load_lut(run["lut_dir"])
    expected = predict_arch(lut, load_arch(run["arch_json"]))
    assert pred["additive_us"] == pytest.approx(expected["additive_us"]) and pred["corrected_us"] is None
    assert pred["predicted_us"] == pred["additive_us"] and pred["lut"] == lut.id
    assert not pred["same_ops"] and pred["trained_additive_us"] is None  # the LUT has no proxy ops
    assert pred["additive_without_classifier_us"] == pytest.approx(pred["additive_us"] - pred["classifier_lut_us"])
    assert any(n.startswith(f"trained at {PROXY}") for n in pred["notes"])
    assert any("10 classes" in n and "1000" in n for n in pred["notes"])


def test_cli_rejects_bad_input_before_training(run, tmp_path, write_synthetic_lut, capsys) -> None:
    arch = str(run["arch_json"])
    proxy_lut = write_synthetic_lut(tmp_path / "luts", PROXY)
    cases = [
        (["--arch", str(tmp_path / "nope.json")], "cannot read arch file"),
        (["--arch", arch, "--out", str(tmp_path / "o"), "--lut", str(tmp_path / "nolut")], "no LUT at"),
        (["--arch", arch, "--out", str(tmp_path / "o"), "--lut", str(proxy_lut)], "of space 'fbnet', the LUT"),
        (["--arch", arch, "--out", str(run["out"])], "holds a run already"),
        (["--arch", arch, "--out", str(tmp_path / "empty"), "--resume"], "no checkpoint"),
        (["--arch", arch, "--resume", "--fresh"], "give one"),
        (["--arch", arch, "--scale", "lut", "--proxy-space", PROXY], "contradict"),
        (["--arch", arch, "--out", str(tmp_path / "x"), "--", "--runs", "3"], "add --device host|SERIAL"),
        (["--arch", arch, *TRAIN_ARGS[:2], "--epochs", "3", "--out", str(run["out"]), "--resume"],
         "settings it was started with"),
    ]  # fmt: skip
    for argv, message in cases:
        assert main(argv) == 2, argv
        assert message in capsys.readouterr().err, argv
    assert not any((tmp_path / d).exists() for d in ("o", "x", "empty"))


def test_cli_interrupted_says_how_to_continue(run, tmp_path, capsys, monkeypatch) -> None:
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("search.train.train_arch", interrupted)
    assert main(["--arch", str(run["arch_json"]), "--out", str(tmp_path / "t")]) == 130
    assert "nothing to resume" in capsys.readouterr().err
    assert main(["--arch", str(run["arch_json"]), *TRAIN_ARGS, "--out", str(_copy(run, tmp_path)), "--resume"]) == 130
    assert "--resume to continue" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_checks_runtime_and_dtype_with_the_profiler_before_training(run, tmp_path, capsys) -> None:
    arch, out = str(run["arch_json"]), str(tmp_path / "t")
    with pytest.raises(SystemExit) as e:  # a runtime name is checked when the arguments are parsed
        main(["--arch", arch, "--out", out, "--export", "tensorrt"])
    assert e.value.code == 2 and "invalid choice 'tensorrt'" in capsys.readouterr().err
    assert main(["--arch", arch, "--out", out, "--export", "tflite", "--dtype", "int8"]) == 2
    assert "tflite exports fp32, not 'int8'" in capsys.readouterr().err
    assert main(["--arch", arch, "--out", out, "--export", "onnx", "--measure", "host", "--", "--runs", "0"]) == 2
    assert "runs ≥ 1" in capsys.readouterr().err
    assert not Path(out).exists()


@pytest.mark.slow
def test_measure_after_proxy_training_times_the_network_the_lut_predicts(run, tmp_path, capsys) -> None:
    """Trained on the proxy, the LUT's own network (its resolution, width and head) is exported to
    lut-scale/ and timed beside the prediction; the trained proxy is exported, not timed."""
    out = _copy(run, tmp_path)  # a finished run: --resume goes straight to the export
    argv = ["--arch", str(run["arch_json"]), *TRAIN_ARGS, "--out", str(out), "--resume", "--export", "executorch",
            "--export", "tflite", "--measure", "host", "--json", *FAST_MEASURE]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    report = _last_json(printed)
    assert report == json.loads((out / "report.json").read_text())
    assert report["resumed_from_epoch"] == 2 and report["weights_sha256"] == run["report"]["weights_sha256"]
    assert [e["runtime"] for e in report["exports"]] == ["executorch", "tflite"]
    for rec in report["exports"]:  # the trained proxy: exported, not timed
        path = Path(rec["export_path"])
        assert path.parent == out and path.stat().st_size == rec["size_bytes"] > 0
        assert "measured_latency_us" not in rec
    assert (out / "model.pte").is_file() and (out / "model.tflite").is_file()
    timed = report["lut_scale_exports"]
    assert [e["runtime"] for e in timed] == ["executorch", "tflite"]
    for rec in timed:
        assert Path(rec["export_path"]).parent == out / "lut-scale" and rec["network"] == "lut-scale"
        assert rec["measured_latency_us"] > 0 and rec["stats"]["n"] == 3 and rec["device"] == "host"
        samples = json.loads(Path(rec["measure_path"]).read_text())["samples_us"]
        assert len(samples) == 3
        assert any("the LUT is of synthetic" in n for n in rec["vs_lut_notes"])
    timed_arch = load_arch(out / "lut-scale" / "model.json")
    lut_arch = load_arch(run["arch_json"])
    assert (timed_arch.space, timed_arch.blocks) == (lut_arch.space, lut_arch.blocks) == ("fbnet", lut_arch.blocks)
    assert timed_arch.info["num_classes"] == 10 and timed_arch.info["trained"] is False
    keys = [o.key for o in arch_ops(timed_arch, replace(get_space("fbnet"), num_classes=10))]
    assert keys[:-1] == [o.key for o in arch_ops(lut_arch)][:-1]  # the LUT's ops but the classifier
    assert report["measured_latency_us"] == timed[0]["measured_latency_us"]
    assert report["export_path"] == report["exports"][0]["export_path"]
    pred = report["prediction"]
    assert pred["predicted_us"] == run["report"]["prediction"]["predicted_us"]
    assert pred["notes"][0].startswith("timed: the LUT's own network (fbnet")
    assert not any(n.startswith("trained at") for n in pred["notes"])  # measured and predicted: one network
    assert "timed in place of the proxy" in printed


@pytest.mark.slow
def test_int8_export_is_calibrated_on_training_images(run, tmp_path, capsys) -> None:
    out = _copy(run, tmp_path)
    argv = ["--arch", str(run["arch_json"]), *TRAIN_ARGS, "--out", str(out), "--resume", "--export", "onnx",
            "--dtype", "int8", "--json"]  # fmt: skip
    assert main(argv) == 0
    rec = _last_json(capsys.readouterr().out)["exports"][0]
    assert (rec["runtime"], rec["dtype"], Path(rec["export_path"]).name) == ("onnxruntime", "int8", "model-int8.onnx")
    assert rec["calibration"] == f"32 inputs from {out / 'calibration.pt'}"
    assert torch.load(out / "calibration.pt", weights_only=True).shape == (32, 3, 32, 32)


@pytest.mark.slow
def test_measure_on_the_loopback_phone_end_to_end(run, loopback, tmp_path, capsys) -> None:
    server, daemon = loopback
    out = _copy(run, tmp_path)
    argv = ["--arch", str(run["arch_json"]), *TRAIN_ARGS, "--out", str(out), "--resume",
            "--export", "executorch", "--measure", daemon.serial, "--json", *FAST_MEASURE,
            "--adb-port", str(server.port)]  # fmt: skip
    assert main(argv) == 0
    report = _last_json(capsys.readouterr().out)
    rec = report["lut_scale_exports"][0]  # the LUT's network, timed in the proxy's place
    assert rec["device"] == daemon.serial and "loopback" in rec["device_id"].lower()
    assert report["measured_latency_us"] == rec["measured_latency_us"] > 0 and rec["stats"]["n"] == 3


@pytest.mark.slow
def test_lut_scale_reports_only_the_classifier_as_different(tmp_path, write_synthetic_lut, one_torch_thread) -> None:
    lut_dir = write_synthetic_lut(tmp_path / "luts", "fbnet-r96-w0.35")
    out = tmp_path / "t"
    assert main(["--arch", "fbnet_96_035_1", "--lut", str(lut_dir), "--scale", "lut", "--subset", "32",
                 "--epochs", "1", "--batch-size", "16", "--out", str(out)]) == 0  # fmt: skip
    report = json.loads((out / "report.json").read_text())
    model_arch = load_arch(out / "model.json")
    assert report["train_space"] == report["space"] == model_arch.space == "fbnet-r96-w0.35"
    assert model_arch.head_channels == 1416 and report["scale"] == "lut"
    pred = report["prediction"]
    assert not pred["same_ops"] and len(pred["notes"]) == 1 and pred["notes"][0].startswith("classifier")
    expected = predict_arch(load_lut(lut_dir), get_arch("fbnet_96_035_1"))
    assert pred["additive_us"] == pytest.approx(expected["additive_us"])


# --- past one machine ----------------------------------------------------------------------------------
_WORKER = """
import json, sys
import torch
from search.data import load_data
from search.distributed import setup, teardown
from search.space import get_space
from search.training import TrainConfig, train_arch

torch.set_num_threads(1)
dist = setup("cpu")
data = load_data("digits", resolution=32, subset=64, split_seed=0)
res = train_arch(tuple(sys.argv[2].split(",")), get_space("fbnet-r32-w0.25"), data,
                 TrainConfig(epochs=2, batch_size=15, seed=1), dist=dist)
state = {k: v.tolist() for k, v in res["model"].state_dict().items()}
with open(f"{sys.argv[1]}/rank{dist.rank}.json", "w") as f:
    json.dump({"world_size": dist.world_size, "digest": res["weights_sha256"], "state": state,
               "history": [{k: v for k, v in r.items() if k != "epoch_s"} for r in res["history"]]}, f)
teardown(dist)
"""


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_two_process_training_agrees_bit_for_bit_and_rank0_writes(run, small_arch, tmp_path) -> None:
    worker = tmp_path / "worker.py"
    worker.write_text(_WORKER)
    proc = _torchrun(str(worker), str(tmp_path), ",".join(small_arch.blocks))
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world_size"] == r1["world_size"] == 2
    assert r0["state"] == r1["state"] and r0["digest"] == r1["digest"]  # weights and buffers
    assert r0["history"] == r1["history"]  # all-reduced metrics

    out = tmp_path / "ddp"
    # one thread per rank, as the worker above: float sums over 2 threads round differently
    proc = _torchrun("-m", "search.train", "--arch", str(run["arch_json"]), "--subset", "64", "--epochs", "2",
                     "--batch-size", "15", "--seed", "1", "--torch-threads", "1", "--out", str(out), "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    json_lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert len(json_lines) == 1  # rank 1 prints nothing
    assert sum(ln.startswith("epoch ") for ln in proc.stdout.splitlines()) == 2
    report = json.loads(json_lines[0])
    assert report["world_size"] == 2 and report["ranks_agree"] is True
    assert report["weights_sha256"] == r0["digest"]  # the CLI trains what the ranks agreed on
    assert load_arch(out / "model.json").info["world_size"] == 2
    assert load_checkpoint(out / "checkpoint.pt")["world_size"] == 2
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "metrics.csv", "model.json", "model.pt",
                                                     "report.json"]  # fmt: skip


def test_lut_network_timed_in_place_of_a_proxy_is_the_luts_own(tmp_path, monkeypatch) -> None:
    """`profiler_client.time_lut_network`: the LUT arch in its own space with this data's
    classifier, weights as training starts them, an int8 export calibrated at the LUT's resolution."""
    from search import profiler_client

    calls = []
    monkeypatch.setattr(profiler_client, "export_and_measure",
                        lambda *a, **kw: calls.append((a, kw)) or [{"runtime": "executorch", "dtype": "int8"}])  # fmt: skip
    arch = get_arch("fbnet_96_035_1")
    images = torch.randn(4, 3, 32, 32)
    records = profiler_client.time_lut_network(arch, 10, tmp_path / "lut-scale", {"executorch": ".pte"}, "int8",
                                               device="host", calibration_images=images, info={"trained_network": "x"})  # fmt: skip
    assert records == [{"runtime": "executorch", "dtype": "int8", "network": "lut-scale"}]
    (model_json, weights, folder, suffixes, dtype), kw = calls[0]
    timed = load_arch(model_json)
    assert (timed.space, timed.blocks, timed.head_channels) == (arch.space, arch.blocks, arch.head_channels)
    assert timed.info["num_classes"] == 10 and timed.info["trained_network"] == "x"
    net = build_model(timed, 10)
    net.load_state_dict(torch.load(weights, weights_only=True))
    assert kw["device"] == "host" and dtype == "int8"
    assert torch.load(kw["calibration"], weights_only=True).shape == (4, 3, 96, 96)
    with pytest.raises(ValueError, match="calibration_images"):
        profiler_client.time_lut_network(arch, 10, tmp_path / "b", {"executorch": ".pte"}, "int8", device="host")
