"""lut.plots: every plot is written as a valid, non-trivial PNG (synthetic LUTs, no measurement)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from lut.__main__ import main as lut_main
from lut.compare import compare_luts
from lut.plots import heatmap, ops_scatter, plot_all, validation_scatter
from lut.validate import evaluate, write_validation

SPACE = "fbnet-r32-w0.25"  # the synthetic_lut default

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from the IHDR chunk; fails unless the file is a PNG."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def _report(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    archs = []
    for i in range(16):
        pred = float(rng.uniform(500, 2000))
        meas = pred * (1 + 0.03 * rng.standard_normal())
        archs.append({"name": f"random_{i:03d}" if i < 14 else f"named_{i}",
                      "split": "train" if i < 7 else "holdout", "predicted_us": pred,
                      "num_ops": 24.0, "measured_us": meas, "half_us": [meas, meas * 1.01]})  # fmt: skip
    return {**evaluate(archs), "archs": archs}


def test_each_plot_is_a_png(tmp_path: Path, synthetic_lut) -> None:
    a = synthetic_lut(tmp_path / "s", "devA")
    b = synthetic_lut(tmp_path / "s", "devB", scale={"k5_e6": 2.0})
    files = [
        heatmap(a, tmp_path / "heat.png"),
        validation_scatter(_report(), tmp_path / "val.png", title="synthetic"),
        ops_scatter(compare_luts(a, b), tmp_path / "ops.png"),
    ]
    for f in files:
        w, h = png_size(f)
        assert w > 300 and h > 300 and f.stat().st_size > 10_000


@pytest.mark.slow  # five figures: ~5 s, more on a busy machine
def test_plot_all_and_cli(tmp_path: Path, capsys: pytest.CaptureFixture, synthetic_lut) -> None:
    root = tmp_path / "luts"
    a = synthetic_lut(root, "devA")
    synthetic_lut(root, "devB", scale={"k3_e6": 0.5})
    assert [f.name for f in plot_all(a, tmp_path / "p1")] == ["heatmap.png"]  # not validated yet
    write_validation(a, {**_report(), "num_archs": 16})
    rc = lut_main(["plot", f"devA/{SPACE}/executorch-t1", "--vs", f"devB/{SPACE}/executorch-t1",
                   "--out", str(tmp_path / "p2"), "--root", str(root)])  # fmt: skip
    assert rc == 0
    printed = capsys.readouterr().out.split()
    names = sorted(Path(p).name for p in printed)
    assert names == ["heatmap.png", "ops_vs.png", "validation.png"]
    for p in printed:
        assert png_size(Path(p))[0] > 300
