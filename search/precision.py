"""Numeric precision and repeatability of search and training on a device.

On cuda, search and training run in mixed precision: `torch.autocast` runs convolutions and
linear layers in bfloat16 (fp32 accumulation; Ampere and newer) or, where the GPU lacks bfloat16,
in float16 with a `torch.amp.GradScaler` against underflowing gradients. Everything autocast does
not lower stays float32, notably the latency term Σ m·LUT, the softmax over θ and the loss.
Training also puts the network and its input in channels-last layout, which cuDNN's convolutions
on tensor cores prefer. Search keeps float32 under float16-only GPUs (a scaler would have to sit in
every strategy's steps) and on CPU, where bfloat16 convolutions are slower than float32 ones.

`repeatable(True)` (`--deterministic`) asks torch for deterministic kernels (an op without one
raises), turns cuDNN's autotuner off and fixes cuBLAS's workspace, so that a run with the same
seed on the same machine gives the same numbers; `repeatable(False)` lets cuDNN pick the fastest
convolution algorithm per shape. CPU runs are repeatable either way at a fixed thread count.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from dataclasses import dataclass
from typing import ContextManager

import torch

__all__ = ["Precision", "add_precision_arguments", "precision_for", "repeatable"]


@dataclass(frozen=True)
class Precision:
    """How one device computes: float32, or autocast to `dtype` (bfloat16 / float16)."""

    device_type: str = "cpu"  # "cpu" or "cuda"
    dtype: torch.dtype | None = None  # autocast dtype; None: float32 throughout
    channels_last: bool = False  # training: network and input in NHWC

    @property
    def name(self) -> str:
        return "fp32" if self.dtype is None else f"amp-{str(self.dtype).removeprefix('torch.')}"

    def autocast(self) -> ContextManager[None]:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def scaler(self) -> torch.amp.GradScaler:
        """A loss scaler, active only for float16 (bfloat16 has float32's exponent range)."""
        return torch.amp.GradScaler(self.device_type, enabled=self.dtype == torch.float16)

    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format


def precision_for(device: torch.device | str, *, training: bool, amp: bool = True) -> Precision:
    """The precision a search (`training=False`) or a training run uses on `device`."""
    device = torch.device(device)
    if device.type != "cuda" or not amp:
        return Precision(device.type)
    if torch.cuda.is_bf16_supported():
        return Precision("cuda", torch.bfloat16, channels_last=training)
    if training:
        return Precision("cuda", torch.float16, channels_last=True)
    return Precision("cuda")


def repeatable(deterministic: bool) -> None:
    """Deterministic kernels (slower, repeatable) or the fastest ones (cuDNN autotuning)."""
    if deterministic:
        # cuBLAS needs a fixed workspace for repeatable results; read when CUDA initialises
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic


def add_precision_arguments(p: argparse.ArgumentParser) -> None:
    """`--deterministic` and `--no-amp` (shared by `search.run` and `search.train`)."""
    p.add_argument("--deterministic", action="store_true",
                   help="deterministic kernels: the same seed gives the same run on this machine (slower on cuda)")
    p.add_argument("--no-amp", dest="amp", action="store_false",
                   help="float32 on cuda too (default there: mixed precision, see search.precision)")  # fmt: skip
