"""Training run files: the checkpoint that resumes a run exactly, and the per-epoch metrics.

    save_checkpoint(path, state)          # torch.save into memory, then lut.files.atomic_write
    state = load_checkpoint(path[, dist]) # CheckpointError: missing, unreadable, other format;
                                          # with dist: rank 0 reads, every rank gets it
    check_same_run(state, identity)       # CheckpointError naming what differs
    write_metrics(path, history)          # metrics.csv, METRIC_COLUMNS, rewritten atomically

A checkpoint is a dict (read back with `torch.load(weights_only=True)`: tensors, numbers,
strings, lists and dicts only):

    format        CHECKPOINT_FORMAT
    identity      what makes two runs the same run: the trained arch (space, blocks, head width),
                  num_classes, the data (name, classes, sizes) and the TrainConfig; a resume must
                  match it exactly (a different epoch count changes the learning-rate schedule)
    epoch         epochs completed (the next run starts at this epoch)
    model         the network's state_dict (no DDP `module.` prefix)
    optimizer     SGD state (momentum buffers, lr)
    scheduler     the warm-up + cosine schedule's state (`search.recipe.make_schedule`)
    rng           torch's CPU RNG state, the data-order generator's state, and CUDA's when used
    history       the metric rows of the completed epochs
    world_size    processes that trained it (a resume may use another number; the data order is
                  the same, the BatchNorm statistics and float sums are not bit-identical then)

A crash mid-write leaves the previous checkpoint in place (atomic rename), so a resume always
starts from the last complete epoch.
"""

from __future__ import annotations

import csv
import io
import pickle
import zipfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from lut.files import atomic_write
from search.distributed import Dist, broadcast_object

__all__ = ["CHECKPOINT_FORMAT", "METRIC_COLUMNS", "CheckpointError", "save_checkpoint", "load_checkpoint",
           "check_same_run", "write_metrics"]  # fmt: skip

CHECKPOINT_FORMAT = 1
# metrics.csv, one row per epoch: lr is the learning rate at the epoch's first step
METRIC_COLUMNS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "epoch_s")


class CheckpointError(ValueError):
    """A checkpoint cannot be read or belongs to another run; the message says what to do."""


def save_checkpoint(path: str | Path, state: Mapping[str, Any]) -> Path:
    """Serialize `state` (with `format` added) and replace `path` with it atomically."""
    buf = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, **state}, buf)
    return atomic_write(path, buf.getvalue())


def load_checkpoint(path: str | Path, dist: Dist | None = None) -> dict[str, Any]:
    """The checkpoint at `path`. With `dist`, rank 0 reads it and every rank receives it (or the
    same CheckpointError), so only rank 0 needs the file."""
    if dist is not None and dist.is_distributed:
        payload: Any = None
        if dist.is_main:
            try:
                payload = ("ok", load_checkpoint(path))
            except CheckpointError as e:
                payload = ("error", str(e))
        kind, value = broadcast_object(payload, dist)
        if kind == "error":
            raise CheckpointError(value)
        return value
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"no checkpoint at {path} to resume from; run without --resume to start training, "
            "or point --out at the folder of the interrupted run"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            f"{path} has checkpoint format {found!r}; this version reads format {CHECKPOINT_FORMAT}"
        )
    return state


def check_same_run(state: Mapping[str, Any], identity: Mapping[str, Any], where: str = "checkpoint") -> None:
    """Raise CheckpointError unless the checkpoint was written by the run `identity` describes."""
    old = state.get("identity") or {}
    diff = [k for k in sorted(set(old) | set(identity)) if old.get(k) != identity.get(k)]
    if not diff:
        return
    lines = [f"  {k}: checkpoint {old.get(k)!r}, now {identity.get(k)!r}" for k in diff]
    hint = (
        "it was trained with another architecture: use another --out, or drop --resume to start over"
        if "arch" in diff
        else "resume with the settings it was started with, or use another --out"
    )
    raise CheckpointError(f"{where} belongs to a different run ({hint}):\n" + "\n".join(lines))


def write_metrics(path: str | Path, history: Sequence[Mapping[str, Any]]) -> Path:
    """Replace `path` with a CSV of `history` (METRIC_COLUMNS; other keys are left out)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(METRIC_COLUMNS), lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    w.writerows(history)
    return atomic_write(path, buf.getvalue())
