"""Deploy a trained network: export it through a runtime, and time the exported file on a target.

    python -m profiler.deploy check   --runtime executorch [--runtime tflite] [--dtype int8]
                                      [--device host|SERIAL [phone options]] [measure options]
    python -m profiler.deploy export  --arch model.json --weights model.pt --runtime executorch
                                      [--dtype int8 [--calibration inputs.pt]] [--layout nhwc|nchw]
                                      --out model.pte
    python -m profiler.deploy measure --model model.pte [--runtime executorch] [--layout nhwc|nchw]
                                      [--device host|SERIAL] [--threads 1] [--rounds 5] [--warmup 5]
                                      [--runs 20] [--wait-lock SECONDS] [phone options]

The CLI contract (what `python -m search.train --export/--device` relies on; it reaches the
profiler only through this command line, from `search.profiler_client`): the last line printed
on stdout is one JSON object.
On success the exit status is 0; on bad input it is 2, on a failed export or measurement 1, and
the object is `{"error": MESSAGE}`. Logs and progress bars go to stderr.

    check    {"runtimes": [{"runtime", "dtype", "suffix", "runner"}], "device", "device_id"}
             runtime names, dtypes, the options a `measure` would get, and (with --device) that
             the target answers: what a long training run checks before it starts
    export   {"export_path", "sha256", "size_bytes", "runtime", "dtype", "layout", "input_shape",
              "num_classes", "exporters"}
    measure  {"model_path", "runtime", "layout", "device", "device_id", "threads",
              "measured_latency_us" (the median), "stats" (median/mean/std/min/p10/p90 µs and n,
              `lut.stats.summarize`), "samples_us", "load_us", "memory_kb" (medians, null where the
              target does not report them), "protocol"}

Inputs of `export`: `--arch` is an arch JSON in the space the network was trained in (e.g.
`fbnet-r32-w0.25`); its `info.num_classes` is the classifier width (default: the space's 1000).
`--weights` is a `torch.save`d state_dict of `search.space.build_model(arch, num_classes)`, or a
training checkpoint holding one under `model`. The network is built with `search.space`, loaded
strictly and exported in eval mode through the runtime registry (`get_runtime(name, dtype)
.export`, the exporters the LUT ops went through), on a seeded 1×3×R×R example input. int8 is
the runtime's own post-training quantization; `--calibration` (a `torch.save`d N×3×R×R tensor of
the network's own inputs, e.g. training images) calibrates it on real data, else it is calibrated
on random inputs as LUT ops are, which suits timing but not a network meant to be used.

`--layout` is the I/O layout of the file (`profiler.runtimes.base`; default: the runtime's own,
as for LUT ops); `measure` must be told the layout the file was exported with.

`measure` times the file with the profiler's own round loop (`profiler.protocol.rounds.run_rounds`):
R rounds, each `--warmup` untimed and `--runs` timed invocations, on `host` or on an adb serial
(the same phone options as `profiler.run`: `--runner`, `--adb-port`, `--core-mask`, ...), holding
the device's lock (`profiler.targets.lock`) like every other measurement.

`--runtime` takes a runtime name or its file format (`onnx` → onnxruntime, `pte`, `tflite`);
`measure` infers it from the model's suffix when not given.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import pickle
import statistics
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Sequence

import torch

from hwnas.flags import add_device, add_out, add_progress, add_runtime, add_verbose, run_main
from lut.files import atomic_write
from lut.stats import summarize
from profiler.export import quiet_exporter_noise
from profiler.protocol.config import ProtocolConfig
from profiler.protocol.rounds import run_rounds
from profiler.runtimes import RUNTIMES, ExportError, get_runtime, runtime_info
from profiler.runtimes.base import LAYOUTS
from profiler.targets import RunSpec, TargetError, get_target
from profiler.targets.adb import adb_options, add_adb_arguments
from profiler.targets.host import HostTarget
from profiler.targets.lock import lock_key_of, target_lock
from search.space import Arch, ArchError, build_model, get_space, load_arch

__all__ = ["DeployError", "resolve_runtime", "load_trained", "export_trained", "measure_model",
           "check", "main"]  # fmt: skip

log = logging.getLogger(__name__)
_D = ProtocolConfig()


class DeployError(ValueError):
    """Bad input to an export or a measurement; the message says what to give instead."""


def resolve_runtime(name: str) -> str:
    """A runtime name, or its file format ('onnx' → 'onnxruntime', 'pte' → 'executorch')."""
    if name in RUNTIMES:
        return name
    for info in RUNTIMES.values():
        if info.suffix.lstrip(".") == name.lstrip("."):
            return info.name
    formats = ", ".join(f"{i.name} ({i.suffix.lstrip('.')})" for i in RUNTIMES.values())
    raise DeployError(f"unknown runtime {name!r}; known runtimes (formats): {formats}")


def _check_dtype(runtime: str, dtype: str, layout: str | None = None) -> None:
    info = runtime_info(runtime)
    if dtype not in info.dtypes:
        raise DeployError(f"runtime {runtime} exports {', '.join(info.dtypes)}, not {dtype!r}")
    if layout is not None and layout not in info.layouts:
        raise DeployError(f"runtime {runtime} exports layout(s) {', '.join(info.layouts)}, not {layout!r}")


def _runtime_of_file(path: Path) -> str:
    for info in RUNTIMES.values():
        if path.suffix == info.suffix:
            return info.name
    raise DeployError(f"cannot tell the runtime of {path} from its suffix; pass --runtime")


# --- building the trained network ------------------------------------------------------------------
def load_trained(arch_path: str | Path, weights_path: str | Path) -> tuple[torch.nn.Module, torch.Tensor, Arch, int]:
    """(network in eval mode with the trained weights, seeded example input, arch, num_classes)."""
    try:
        arch = load_arch(arch_path)
    except ArchError as e:
        raise DeployError(f"--arch {arch_path}: {e}") from None
    num_classes = int(arch.info.get("num_classes") or get_space(arch.space).num_classes)
    weights_path = Path(weights_path)
    try:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DeployError(f"--weights {weights_path}: no such file") from None
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
        raise DeployError(
            f"--weights {weights_path} is not a torch state_dict file ({type(e).__name__}: {e})"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]  # a training checkpoint
    if not isinstance(state, dict):
        raise DeployError(f"--weights {weights_path} holds a {type(state).__name__}, not a state_dict")
    model = build_model(arch, num_classes)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise DeployError(
            f"--weights {weights_path} do not fit arch {arch.label} ({arch.space}, {num_classes} classes): "
            f"{str(e).splitlines()[0]} ... — export with the model.json written beside those weights"
        ) from None
    res = get_space(arch.space).resolution
    x = torch.randn((1, 3, res, res), generator=torch.Generator().manual_seed(0))
    return model.eval(), x, arch, num_classes


def _calibration_inputs(path: str | Path, example: torch.Tensor) -> list[torch.Tensor]:
    """The N×C×H×W tensor saved at `path` as N inputs shaped like `example` (1×C×H×W)."""
    try:
        xs = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DeployError(f"--calibration {path}: no such file") from None
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
        raise DeployError(f"--calibration {path} is not a torch tensor file ({type(e).__name__}: {e})") from None
    fits = isinstance(xs, torch.Tensor) and xs.dim() == example.dim() and xs.shape[1:] == example.shape[1:]
    if not fits or not len(xs):
        shape = tuple(xs.shape) if isinstance(xs, torch.Tensor) else type(xs).__name__
        raise DeployError(f"--calibration {path} holds {shape}; expected N×{'×'.join(map(str, example.shape[1:]))}")
    return [x[None].float().contiguous() for x in xs]


def export_trained(
    arch_path: str | Path, weights_path: str | Path, runtime: str, dtype: str, out: str | Path,
    layout: str | None = None, calibration: str | Path | None = None,
) -> dict[str, Any]:
    """Export the trained network to `out` (written atomically); returns the export record."""
    runtime = resolve_runtime(runtime)
    _check_dtype(runtime, dtype, layout)
    if calibration is not None and dtype == "fp32":
        raise DeployError("--calibration calibrates a quantized export; it needs --dtype int8")
    rt = get_runtime(runtime, dtype, layout)
    out = Path(out)
    if out.suffix != rt.suffix:
        raise DeployError(f"--out {out}: a {runtime} model file ends in {rt.suffix}")
    model, x, arch, num_classes = load_trained(arch_path, weights_path)
    kwargs = {"calibration": _calibration_inputs(calibration, x)} if calibration is not None else {}
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".export-") as tmp:
        tmp_file = Path(tmp) / f"model{rt.suffix}"
        rt.export(model, x, tmp_file, **kwargs)  # ExportError carries the exporter's message
        data = tmp_file.read_bytes()
    atomic_write(out, data)
    return {
        "export_path": str(out),
        "sha256": hashlib.sha256(data).hexdigest(),
        "size_bytes": len(data),
        "runtime": runtime,
        "dtype": dtype,
        "layout": rt.layout,
        "calibration": None if dtype == "fp32" else (f"{len(kwargs['calibration'])} inputs from {calibration}"
                                                     if kwargs else "random inputs"),
        "arch": arch.label,
        "space": arch.space,
        "input_shape": list(x.shape),
        "num_classes": num_classes,
        "exporters": rt.versions(),
    }


# --- timing a model file -----------------------------------------------------------------------------
def measure_model(
    model_path: str | Path,
    runtime: str | None = None,
    device: str = "host",
    *,
    layout: str | None = None,
    target_options: dict[str, Any] | None = None,
    threads: int = 1,
    config: ProtocolConfig = ProtocolConfig(),
    core_mask: str | None = None,
    lock_wait_s: float = 0.0,
    progress: bool = False,
) -> dict[str, Any]:
    """Time one model file on `device` in `config.rounds` rounds; raw samples and their stats."""
    path = Path(model_path)
    if not path.is_file():
        raise DeployError(f"--model {path}: no such file")
    runtime = resolve_runtime(runtime) if runtime else _runtime_of_file(path)
    _check_dtype(runtime, "fp32", layout)
    rt = get_runtime(runtime, layout=layout)  # opening a file needs its layout, not its dtype
    if path.suffix != rt.suffix:
        raise DeployError(f"{path} is not a {runtime} model (expected a {rt.suffix} file)")
    spec = RunSpec(threads=threads, warmup=config.warmup, runs=config.runs, core_mask=core_mask)
    samples: list[float] = []
    extras: list[dict[str, float]] = []
    errors: list[str] = []

    def on_samples(_key: str, _round: int, s: list[float], extra: dict[str, float]) -> None:
        samples.extend(s)
        extras.append(extra)

    target = get_target(device, target_options, lock_wait_s=lock_wait_s, what=f"time {path.name} with {runtime}")
    with target_lock(target, wait_s=lock_wait_s, what=f"time {path.name} with {runtime}"):
        try:
            device_id = target.fingerprint()["device_id"]
            target.prepare(rt, [path])
            given_up = run_rounds(
                target, rt, {path.stem: path}, config, spec, on_samples=on_samples,
                on_failure=lambda _k, _r, msg: errors.append(msg), progress=progress, desc=f"measure {path.name}",
            )  # fmt: skip
        finally:
            target.close()
    if given_up or not samples:
        raise TargetError(f"{path.name} failed on {device}: {'; '.join(errors) or 'no samples'}")
    stats = summarize(samples)

    def median_of(col: str) -> float | None:
        vals = [e[col] for e in extras if col in e]
        return float(statistics.median(vals)) if vals else None

    return {
        "model_path": str(path),
        "runtime": runtime,
        "layout": rt.layout,
        "device": device,
        "device_id": device_id,
        "threads": threads,
        "measured_latency_us": stats["median_us"],
        "stats": stats,
        "samples_us": samples,
        "load_us": median_of("load_us"),
        "memory_kb": median_of("memory_kb"),
        "protocol": {"rounds": config.rounds, "warmup": config.warmup, "runs": config.runs,
                     "seed": config.seed},  # fmt: skip
    }


def check(runtimes: Sequence[str], dtype: str = "fp32", device: str | None = None,
          target_options: dict[str, Any] | None = None, *, layout: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Validate runtime names, dtype and layout, and (with `device`) that the target answers."""
    rows = []
    for name in runtimes:
        rt = resolve_runtime(name)
        _check_dtype(rt, dtype, layout)
        info = runtime_info(rt)
        if device not in (None, "host") and info.runner is None:
            raise DeployError(f"runtime {rt} has no phone runner; measure it on host, or export executorch/tflite")
        rows.append({"runtime": rt, "dtype": dtype, "suffix": info.suffix, "runner": info.runner})
    out: dict[str, Any] = {"runtimes": rows, "device": device, "device_id": None}
    if device is not None:  # it answers: its identity, read without touching it (another job may hold it)
        out["device_id"] = (HostTarget().fingerprint()["device_id"] if device == "host"
                            else lock_key_of(device, target_options))  # fmt: skip
    return out


# --- CLI ---------------------------------------------------------------------------------------------
def _layout_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--layout", choices=LAYOUTS, help="I/O layout of the model file (default: the runtime's own)")


def _protocol_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=1, help="runtime threads (default 1)")
    p.add_argument("--rounds", type=int, default=_D.rounds, help=f"rounds (default {_D.rounds})")
    p.add_argument("--warmup", type=int, default=_D.warmup, help=f"untimed runs per round (default {_D.warmup})")
    p.add_argument("--runs", type=int, default=_D.runs, help=f"timed runs per round (default {_D.runs})")
    p.add_argument("--seed", type=int, default=_D.seed, help="round order seed")
    add_progress(p)
    p.add_argument("--wait-lock", type=float, default=0.0, metavar="SECONDS",
                   help="when another job is measuring on the device, wait this long for it (default: stop)")


def _protocol(args: argparse.Namespace) -> ProtocolConfig:
    if args.threads < 1:
        raise DeployError(f"--threads must be ≥ 1, got {args.threads}")
    return ProtocolConfig(rounds=args.rounds, warmup=args.warmup, runs=args.runs, seed=args.seed)


def _runtime_or_format(text: str) -> str:
    """A runtime name or its file format -> the runtime name; anything else as given (the
    parser's choices then name what is known)."""
    try:
        return resolve_runtime(text)
    except DeployError:
        return text


def _runtime_arg(p: argparse.ArgumentParser, **kw: Any) -> None:
    add_runtime(p, choices=list(RUNTIMES), convert=_runtime_or_format, **kw)


def _target_args(p: argparse.ArgumentParser) -> None:
    add_device(p, help="where to measure: host (default), an adb serial, or SERIAL@HOST:PORT")
    add_adb_arguments(p)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m profiler.deploy", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check", help="validate runtimes, dtype, measure options and (optionally) a target")
    _runtime_arg(c, multiple=True, required=True, help="runtimes (or their file formats) to check")
    c.add_argument("--dtype", default="fp32", help="fp32 (default) or int8 where the runtime has it")
    _layout_arg(c)
    _protocol_args(c)
    _target_args(c)
    c.set_defaults(func=_cmd_check)
    e = sub.add_parser("export", help="export a trained network")
    e.add_argument("--arch", required=True, help="arch JSON of the trained network (model.json)")
    e.add_argument("--weights", required=True, help="its state_dict (model.pt) or a training checkpoint")
    _runtime_arg(e, required=True, help="runtime to export for (or its file format: pte, tflite, onnx)")
    e.add_argument("--dtype", default="fp32", help="fp32 (default) or int8 where the runtime has it")
    _layout_arg(e)
    e.add_argument("--calibration", help="int8: torch.save'd N×3×R×R inputs to calibrate on (default: random)")
    add_out(e, required=True, help="model file to write (its suffix: the runtime's)")
    e.set_defaults(func=_cmd_export)
    m = sub.add_parser("measure", help="time an exported model file on a target")
    m.add_argument("--model", required=True, help="model file (.pte, .tflite, .onnx)")
    _runtime_arg(m, help="runtime of the model file (default: from the file's suffix)")
    _layout_arg(m)
    _protocol_args(m)
    _target_args(m)
    m.set_defaults(func=_cmd_measure)
    for sp in (c, e, m):
        sp.add_argument("--json", action="store_true", help="accepted for symmetry: the last line is always JSON")
        add_verbose(sp)
    return p


def _options(args: argparse.Namespace) -> dict[str, Any] | None:
    return adb_options(args) if args.device not in (None, "host") else None


def _cmd_check(args: argparse.Namespace) -> dict[str, Any]:
    _protocol(args)
    return check(args.runtime, args.dtype, args.device, _options(args), layout=args.layout)


def _cmd_export(args: argparse.Namespace) -> dict[str, Any]:
    return export_trained(args.arch, args.weights, args.runtime, args.dtype, args.out, args.layout, args.calibration)


def _cmd_measure(args: argparse.Namespace) -> dict[str, Any]:
    return measure_model(args.model, args.runtime, args.device or "host", layout=args.layout,
                         target_options=_options(args), threads=args.threads, config=_protocol(args),
                         lock_wait_s=args.wait_lock, progress=args.progress)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)  # fmt: skip
    quiet_exporter_noise()
    try:
        result = args.func(args)
        status = 0
    except (DeployError, ValueError) as e:  # bad input (ArchError, LutError are ValueErrors too)
        result, status = {"error": str(e)}, 2
    except (ExportError, TargetError, OSError) as e:  # the export or the target failed
        result, status = {"error": f"{type(e).__name__}: {e}"}, 1
    if status:
        print(f"error: {result['error']}", file=sys.stderr)
    print(json.dumps(result))
    sys.stdout.flush()
    return status


if __name__ == "__main__":
    sys.exit(run_main(main))
