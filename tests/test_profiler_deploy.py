"""Deploying a trained network: exports compute what the PyTorch model computes, the exported file
is timed on the host and on the loopback phone, and `python -m profiler.deploy` keeps its contract."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from profiler.deploy import DeployError, export_trained, load_trained, measure_model, resolve_runtime
from profiler.protocol.config import ProtocolConfig
from profiler.runtimes import RUNTIMES, get_runtime
from search.data import load_data
from search.space import Arch, build_model

FAST = ProtocolConfig(rounds=2, warmup=1, runs=3)
PROXY = "fbnet-r32-w0.25"


@pytest.fixture(scope="module")
def trained_small(tmp_path_factory, small_arch) -> Path:
    """model.json + model.pt (and checkpoint.pt, holding the state under `model`) of the small arch
    at the proxy with 10 classes after a few SGD steps on digits, BatchNorm statistics of the
    training images; calibration.pt: 32 training images."""
    out = tmp_path_factory.mktemp("trained")
    arch = Arch(PROXY, small_arch.blocks, name="small", info={"num_classes": 10})
    torch.manual_seed(0)
    model = build_model(arch, 10)
    data = load_data("digits", resolution=32, subset=64)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(3):
        for i in range(0, 64, 16):
            loss = torch.nn.functional.cross_entropy(model(data.x_train[i : i + 16]), data.y_train[i : i + 16])
            opt.zero_grad()
            loss.backward()
            opt.step()
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.reset_running_stats()
        bn.momentum = None  # a cumulative average over the forward below
    with torch.no_grad():
        model.train()(data.x_train)
    torch.save(data.x_train[:32].clone(), out / "calibration.pt")
    (out / "model.json").write_text(arch.to_json())
    torch.save(model.state_dict(), out / "model.pt")
    torch.save({"format": 1, "model": model.state_dict()}, out / "checkpoint.pt")
    return out


@pytest.fixture(scope="module")
def exports(trained_small, tmp_path_factory):
    """`exports(runtime, dtype) -> export record`, each exported once per module."""
    root = tmp_path_factory.mktemp("deploy")
    done: dict[tuple[str, str], dict] = {}

    def get(runtime: str, dtype: str = "fp32") -> dict:
        if (runtime, dtype) not in done:
            path = root / f"model-{dtype}{RUNTIMES[runtime].suffix}"
            calibration = trained_small / "calibration.pt" if dtype == "int8" else None
            done[runtime, dtype] = export_trained(trained_small / "model.json", trained_small / "model.pt",
                                                  runtime, dtype, path, calibration=calibration)  # fmt: skip
        return done[runtime, dtype]

    return get


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    """Eight test images, normalised as the small model's training data was."""
    return load_data("digits", resolution=32, subset=64).x_test[:8]


def test_runtime_names_and_formats() -> None:
    assert resolve_runtime("onnx") == resolve_runtime("onnxruntime") == "onnxruntime"
    assert resolve_runtime("pte") == "executorch" and resolve_runtime("tflite") == "tflite"
    with pytest.raises(DeployError, match=r"known runtimes \(formats\): executorch \(pte\)"):
        resolve_runtime("tensorrt")


def test_weights_must_fit_the_arch(trained_small, tmp_path) -> None:
    model_json = json.loads((trained_small / "model.json").read_text())
    model_json["blocks"][1] = "k5_e6"  # another block at layer 1: other parameter shapes
    wrong = tmp_path / "model.json"
    wrong.write_text(json.dumps(model_json))
    with pytest.raises(DeployError, match="do not fit arch"):
        load_trained(wrong, trained_small / "model.pt")
    with pytest.raises(DeployError, match="no such file"):
        load_trained(trained_small / "model.json", tmp_path / "missing.pt")
    model, x, arch, n = load_trained(trained_small / "model.json", trained_small / "checkpoint.pt")
    assert n == 10 and arch.space == "fbnet-r32-w0.25" and tuple(x.shape) == (1, 3, 32, 32)
    assert not model.training


@pytest.mark.slow
# every runtime, each in its last dtype (int8 where it has one: the harder case; ExecuTorch fp32 is
# exported and measured in tests/test_search_train.py)
@pytest.mark.parametrize(("runtime", "dtype"), [(n, i.dtypes[-1]) for n, i in RUNTIMES.items()])
def test_export_computes_what_the_trained_model_computes(exports, trained_small, digits, runtime, dtype) -> None:
    rec = exports(runtime, dtype)
    path = Path(rec["export_path"])
    data = path.read_bytes()
    assert rec["sha256"] == hashlib.sha256(data).hexdigest() and rec["size_bytes"] == len(data)
    assert (rec["runtime"], rec["dtype"], rec["num_classes"]) == (runtime, dtype, 10)
    model, *_ = load_trained(trained_small / "model.json", trained_small / "model.pt")
    session = get_runtime(runtime).open(path, threads=1)
    with torch.no_grad():
        ref = np.concatenate([model(x[None]).numpy() for x in digits])
    got = np.concatenate([session.infer(x[None].numpy()) for x in digits])
    assert got.shape == ref.shape == (8, 10)
    if dtype == "fp32":
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
    else:  # post-training quantization calibrated on training images: close, not equal
        assert rec["calibration"].startswith("32 inputs from")
        assert np.corrcoef(got.ravel(), ref.ravel())[0, 1] > 0.95
        assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.75


@pytest.mark.slow
def test_measure_on_host_keeps_every_sample(exports) -> None:
    rec = exports("onnxruntime")
    m = measure_model(rec["export_path"], device="host", config=FAST)
    assert m["runtime"] == "onnxruntime" and m["device_id"].startswith("host-") and m["layout"] == "nchw"
    assert len(m["samples_us"]) == m["stats"]["n"] == FAST.rounds * FAST.runs
    assert m["measured_latency_us"] == pytest.approx(np.median(m["samples_us"]))
    assert m["stats"]["p10_us"] <= m["measured_latency_us"] <= m["stats"]["p90_us"]
    with pytest.raises(DeployError, match="not a executorch model"):
        measure_model(rec["export_path"], "executorch", device="host", config=FAST)


@pytest.mark.slow
@pytest.mark.parametrize("runtime", ["executorch", "tflite"])
def test_measure_on_the_loopback_phone(exports, loopback, runtime) -> None:
    server, daemon = loopback
    rec = exports(runtime)
    m = measure_model(rec["export_path"], device=daemon.serial, layout=rec["layout"], config=FAST,
                      target_options={"adb_port": server.port, "cooldown_poll_s": 0.1})  # fmt: skip
    assert m["device"] == daemon.serial and "loopback" in m["device_id"].lower()
    assert len(m["samples_us"]) == FAST.rounds * FAST.runs and m["measured_latency_us"] > 0
    assert m["layout"] == rec["layout"]


def _cli(*args: str) -> tuple[int, dict]:
    proc = subprocess.run([sys.executable, "-m", "profiler.deploy", *args], capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    return proc.returncode, json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_cli_contract(trained_small, tmp_path) -> None:
    model = ["--arch", str(trained_small / "model.json"), "--weights", str(trained_small / "model.pt")]
    code, rec = _cli("export", *model, "--runtime", "onnx", "--out", str(tmp_path / "m.onnx"))
    assert code == 0 and {"export_path", "sha256", "size_bytes", "runtime", "dtype"} <= set(rec)
    assert rec["runtime"] == "onnxruntime"
    code, m = _cli("measure", "--model", rec["export_path"], "--rounds", "1", "--runs", "2", "--warmup", "0")
    assert code == 0 and m["stats"]["n"] == 2 and m["device"] == "host" and m["measured_latency_us"] > 0
    code, err = _cli("check", "--runtime", "tflite", "--dtype", "int8")
    assert code == 2 and "tflite exports fp32, not 'int8'" in err["error"]
    code, err = _cli("check", "--runtime", "onnx", "--layout", "nhwc")
    assert code == 2 and "onnxruntime exports layout(s) nchw, not 'nhwc'" in err["error"]
    code, err = _cli("export", *model, "--runtime", "onnx", "--out", str(tmp_path / "m.pte"))
    assert code == 2 and "ends in .onnx" in err["error"]
