#!/usr/bin/env bash
# Quick start, command 1: set everything up, then profile the FBNet space on this machine's CPU
# into a versioned LUT under luts/ (ExecuTorch + XNNPACK, 1 thread). Re-running reuses the
# installed environment and cached exports, and a finished LUT is not measured again.
# HWNAS_TORCH=cuda installs the CUDA build of torch instead of the CPU one (docs/gpu.md).
source "$(dirname "$0")/env.sh"
RUNTIME=${RUNTIME:-executorch}
.venv/bin/python -m profiler.run --device host --space fbnet --runtime "$RUNTIME" --luts-root luts --skip-existing
.venv/bin/python -m lut list --luts-root luts
