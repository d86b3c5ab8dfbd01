"""Precision and repeatability (`search.precision`), and a search that streams an image folder.

No GPU here: the mixed-precision training loop is run on the CPU with bfloat16 autocast and
channels-last forced on (what cuda gets), and `--deterministic` on the CPU path."""

from __future__ import annotations

import json

import pytest
import torch

from search import run, training
from search.data import load_data
from search.precision import Precision, precision_for
from search.space import get_space

PROXY = get_space("fbnet-r32-w0.25")
TINY = ["--epochs", "1", "--warmup-epochs", "0", "--batch-size", "16", "--w-fraction", "0.5", "--samples", "2",
        "--recalib-batches", "2", "--train-epochs", "0", "--torch-threads", "1"]  # fmt: skip


def test_cpu_keeps_float32_and_cuda_gets_mixed_precision(monkeypatch) -> None:
    cpu = precision_for("cpu", training=True)
    assert cpu == Precision("cpu") and cpu.name == "fp32" and not cpu.scaler().is_enabled()
    assert precision_for("cuda", training=True, amp=False).dtype is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert precision_for("cuda", training=True) == Precision("cuda", torch.bfloat16, channels_last=True)
    assert precision_for("cuda", training=False) == Precision("cuda", torch.bfloat16)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)  # float16 only: a loss scaler
    assert precision_for("cuda", training=True).dtype == torch.float16
    assert precision_for("cuda", training=False).dtype is None


def test_mixed_precision_channels_last_training_learns_as_float32_does(small_arch, monkeypatch,
                                                                      one_torch_thread) -> None:
    data = load_data("digits", resolution=PROXY.resolution, subset=400)
    cfg = training.TrainConfig(epochs=4, batch_size=32, warmup_epochs=0)
    fp32 = training.train_arch(small_arch.blocks, PROXY, data, cfg)
    mixed = Precision("cpu", torch.bfloat16, channels_last=True)
    monkeypatch.setattr(training, "precision_for", lambda device, training, amp=True: mixed)
    result = training.train_arch(small_arch.blocks, PROXY, data, cfg)
    assert fp32["precision"] == "fp32" and result["precision"] == "amp-bfloat16"
    conv = next(m for m in result["model"].modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert all(torch.isfinite(p).all() for p in result["model"].parameters())
    assert result["test_accuracy"] > 0.3  # 10 classes: far above chance
    assert abs(result["test_accuracy"] - fp32["test_accuracy"]) < 0.15


@pytest.mark.slow
def test_deterministic_search_repeats_on_the_cpu(tmp_path, write_synthetic_lut, one_torch_thread) -> None:
    lut = write_synthetic_lut(tmp_path / "luts", "fbnet")
    try:
        for name in ("a", "b"):
            argv = ["--lut", str(lut), "--out", str(tmp_path / name), "--subset", "64", "--deterministic", *TINY]
            assert run.main(argv) == 0
    finally:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.benchmark = False
    assert (tmp_path / "a" / "theta.csv").read_text() == (tmp_path / "b" / "theta.csv").read_text()


@pytest.mark.slow
def test_search_streams_a_class_subset_of_an_image_folder(tmp_path, write_synthetic_lut, one_torch_thread) -> None:
    from bench.data_loader import make_image_folder

    folder = make_image_folder(tmp_path / "images", 60, 5, size=40, layout="imagenet")
    lut = write_synthetic_lut(tmp_path / "luts", "fbnet")
    argv = ["--lut", str(lut), "--out", str(tmp_path / "run"), "--data", f"imagefolder:{folder}", "--classes", "3",
            "--workers", "1", "--json", *TINY]  # fmt: skip
    assert run.main(argv) == 0
    info = json.loads((tmp_path / "run" / "arch.json").read_text())["info"]
    full = load_data(f"imagefolder:{folder}", resolution=32, workers=0)
    assert len(info["classes"]) == 3 and set(info["classes"]) < set(full.classes)
    assert info["data"].endswith("(3 classes)") and info["precision"] == "fp32"
    assert 0.0 <= info["arch_split_accuracy"] <= 1.0 and 0.0 <= info["test_accuracy"] <= 1.0
