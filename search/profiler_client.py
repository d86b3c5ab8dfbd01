"""From a trained network to its real latency: the profiler's CLI as a subprocess, and the LUT's
prediction of the same architecture beside what was measured.

`search` does not import the profiler (the profiler builds on `search.space`, not the other way
round), so exporting and timing go through `python -m profiler.deploy` and its documented JSON
contract (see that module): the last stdout line is one JSON object, `{"error": ...}` on failure.

    lut = find_lut(arch, None)                 # --lut, else the LUT arch.json names
    check(["executorch"], "fp32", device="SERIAL", extra=["--runner", "executor_runner=./er"])
    export("out/model.json", "out/model.pt", "executorch", "fp32", "out/model.pte")
    measure("out/model.pte", "executorch", "SERIAL", threads=1, extra=[...])
    export_and_measure("out/model.json", "out/model.pt", "out", {"executorch": ".pte"}, "fp32",
                       device="SERIAL")        # both, per runtime; samples to measure-*.json
    lut_runtime_of(lut)                        # {runtime, dtype, threads, layout}
    prediction(lut, lut_arch, trained_arch, num_classes)   # LUT numbers + what differs
    write_timing_model(lut_arch, 10, "out/lut-scale")   # the LUT's own network, to time it
    time_lut_network(lut_arch, 10, "out/lut-scale", {"executorch": ".pte"}, device="host")  # and time it

`extra` are options passed through to `profiler.deploy measure`/`check` verbatim (the phone
options of `profiler.run`: `--runner NAME=PATH`, `--adb-port`, `--core-mask`, ..., and the
protocol's `--rounds`, `--warmup`, `--runs`).
"""

from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F

from lut.correction import predict_arch
from lut.files import atomic_write
from lut.store import Lut, LutCoverageError, LutError, parse_runtime_dir_name
from search.latency import resolve_lut
from search.recipe import init_weights
from search.space import Arch, arch_ops, build_model, get_space

__all__ = ["ProfilerCallError", "call_profiler", "find_lut", "check", "export", "measure", "export_and_measure",
           "prediction", "comparison_notes", "describe", "lut_runtime_of", "write_timing_model", "time_lut_network"]  # fmt: skip

log = logging.getLogger(__name__)

_PROFILER = [sys.executable, "-m", "profiler.deploy"]
WAIT_LOCK_S = 600.0  # a measurement after training waits this long for another job on the device


class ProfilerCallError(RuntimeError):
    """`python -m profiler.deploy` failed; the message is its own. `bad_input`: exit status 2."""

    def __init__(self, message: str, bad_input: bool = False) -> None:
        super().__init__(message)
        self.bad_input = bad_input


def call_profiler(command: str, args: Sequence[str], *, timeout_s: float | None = None) -> dict[str, Any]:
    """Run `python -m profiler.deploy COMMAND ARGS` and return its JSON object (stderr passes
    through to the user: progress and logs)."""
    cmd = [*_PROFILER, command, *map(str, args)]
    log.debug("running %s", " ".join(cmd))
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise ProfilerCallError(f"profiler.deploy {command} did not finish within {timeout_s:.0f} s") from None
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.startswith("{")]
    try:
        result = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        result = None
    if not isinstance(result, dict):
        raise ProfilerCallError(f"profiler.deploy {command} exited {proc.returncode} without a JSON result "
                                f"(stdout tail: {proc.stdout[-500:]!r})")  # fmt: skip
    if proc.returncode != 0 or "error" in result:
        raise ProfilerCallError(str(result.get("error", f"exit status {proc.returncode}")),
                                bad_input=proc.returncode == 2)  # fmt: skip
    return result


def check(runtimes: Sequence[str], dtype: str, *, device: str | None = None, threads: int = 1,
          extra: Sequence[str] = ()) -> dict[str, Any]:  # fmt: skip
    """Validate runtimes, dtype, the measure options and the target before anything long runs."""
    args = [a for r in runtimes for a in ("--runtime", r)] + ["--dtype", dtype, "--threads", str(threads)]
    if device is not None:
        args += ["--device", device]
    return call_profiler("check", args + list(extra))


def export(model_json: str | Path, weights: str | Path, runtime: str, dtype: str, out: str | Path,
           layout: str | None = None, calibration: str | Path | None = None) -> dict[str, Any]:  # fmt: skip
    args = ["--arch", model_json, "--weights", weights, "--runtime", runtime, "--dtype", dtype, "--out", out]
    args += ["--layout", layout] if layout else []
    return call_profiler("export", args + (["--calibration", calibration] if calibration else []))


def measure(model: str | Path, runtime: str, device: str, *, layout: str | None = None, threads: int = 1,
            wait_lock_s: float = WAIT_LOCK_S, extra: Sequence[str] = (), progress: bool = False,
            ) -> dict[str, Any]:  # fmt: skip
    """Time `model` on `device`; waits up to `wait_lock_s` for another job measuring there (a
    `--wait-lock` in `extra` wins: it comes later on the command line)."""
    args = ["--model", model, "--runtime", runtime, "--device", device, "--threads", str(threads),
            "--wait-lock", str(wait_lock_s)]  # fmt: skip
    args += ["--layout", layout] if layout else []
    return call_profiler("measure", args + (["--progress"] if progress else []) + list(extra))


def export_and_measure(
    model_json: str | Path,
    weights: str | Path,
    out: str | Path,
    suffixes: Mapping[str, str],
    dtype: str = "fp32",
    *,
    layouts: Mapping[str, str] | None = None,
    calibration: str | Path | None = None,
    device: str | None = None,
    threads: int = 1,
    extra: Sequence[str] = (),
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Export to `out/model[-DTYPE]<suffix>` for each runtime of `suffixes` (runtime → suffix, as
    `check` returns them; `layouts`: runtime → I/O layout, default the runtime's own;
    `calibration`: inputs an int8 export is calibrated on) and, with
    `device`, time each file there; the raw samples go to `out/measure-<runtime>[-DTYPE]-<device>.json`.
    One record per runtime: the export's fields plus measured_latency_us, stats, load_us,
    memory_kb, device, device_id, threads, protocol, measure_path."""
    out = Path(out)
    stem = "model" if dtype == "fp32" else f"model-{dtype}"
    records = []
    for runtime, suffix in suffixes.items():
        rec = export(model_json, weights, runtime, dtype, out / f"{stem}{suffix}", (layouts or {}).get(runtime),
                     calibration if dtype != "fp32" else None)  # fmt: skip
        log.info("exported %s %s: %s (%d bytes, sha256 %s)", runtime, dtype, rec["export_path"],
                 rec["size_bytes"], rec["sha256"][:12])  # fmt: skip
        if device is not None:
            m = measure(rec["export_path"], runtime, device, layout=rec["layout"], threads=threads, extra=extra,
                        progress=progress)  # fmt: skip
            tag = runtime if dtype == "fp32" else f"{runtime}-{dtype}"
            slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", device)
            path = atomic_write(out / f"measure-{tag}-{slug}.json", json.dumps(m, indent=1) + "\n")
            keep = ("measured_latency_us", "stats", "load_us", "memory_kb", "device", "device_id", "threads",
                    "protocol")  # fmt: skip
            rec.update({k: m[k] for k in keep})
            rec["measure_path"] = str(path)
        records.append(rec)
    return records


def write_timing_model(lut_arch: Arch, num_classes: int, folder: str | Path, seed: int = 0,
                       info: Mapping[str, Any] | None = None) -> tuple[Path, Path]:
    """The network the LUT predicts — `lut_arch` in its own space (resolution, width, head) with a
    classifier of `num_classes` — as `folder/model.json` + `folder/model.pt`, weights initialised
    as training starts them (seeded) and not trained: what is timed when the trained network is a
    proxy of other shapes. Its latency does not depend on the weights' values (dense kernels).
    Returns (model_json, weights)."""
    folder = Path(folder)
    arch = replace(lut_arch, info={"num_classes": num_classes, "trained": False,
                                   "note": "the LUT's network with untrained weights, for timing", **(info or {})})  # fmt: skip
    torch.manual_seed(seed)
    net = init_weights(build_model(arch, num_classes))
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, buf)
    return (atomic_write(folder / "model.json", arch.to_json(indent=2) + "\n"),
            atomic_write(folder / "model.pt", buf.getvalue()))  # fmt: skip


def time_lut_network(
    lut_arch: Arch,
    num_classes: int,
    folder: str | Path,
    suffixes: Mapping[str, str],
    dtype: str = "fp32",
    *,
    device: str,
    layouts: Mapping[str, str] | None = None,
    calibration_images: torch.Tensor | None = None,
    seed: int = 0,
    threads: int = 1,
    extra: Sequence[str] = (),
    progress: bool = False,
    info: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Export and time the network the LUT predicts (`write_timing_model` into `folder`) where a
    proxy of other shapes was trained: `export_and_measure`'s records, each with
    `network: "lut-scale"`. An int8 export is calibrated on `calibration_images` (e.g. training
    images of the proxy), resized to the LUT's resolution."""
    folder = Path(folder)
    model_json, weights = write_timing_model(lut_arch, num_classes, folder, seed, info)
    calibration = None
    if dtype != "fp32":
        if calibration_images is None:
            raise ValueError(f"a {dtype} export needs calibration_images")
        size = get_space(lut_arch.space).resolution
        images = F.interpolate(calibration_images.float(), size=(size, size), mode="bilinear", align_corners=False)
        buf = io.BytesIO()
        torch.save(images.contiguous(), buf)
        calibration = atomic_write(folder / "calibration.pt", buf.getvalue())
    records = export_and_measure(model_json, weights, folder, suffixes, dtype, layouts=layouts, calibration=calibration,
                                 device=device, threads=threads, extra=extra, progress=progress)  # fmt: skip
    return [{**r, "network": "lut-scale"} for r in records]


# --- the LUT and its prediction beside the measurement -------------------------------------------
def find_lut(arch: Arch, lut: str | None = None, *, root: str | Path = "luts", required: bool = False) -> Lut | None:
    """`lut` (a path or id), else the LUT `arch.info["lut"]` names (its path, else its id under
    `root`); None when none is named. A named LUT that cannot be loaded is an error when
    `required` (or given as `lut`), else a warning. The LUT must be of the arch's space."""
    if lut:
        found = resolve_lut(lut, root=root)
    else:
        named = arch.info.get("lut") or {}
        refs = [str(named[k]) for k in ("path", "id") if named.get(k)]
        if not refs:
            return None
        found, errors = None, []
        for ref in refs:
            try:
                found = resolve_lut(ref, root=root)
                break
            except LutError as e:
                errors.append(str(e))
        if found is None:
            msg = (f"arch {arch.label} names LUT {' / '.join(refs)}, which cannot be loaded here "
                   f"({errors[-1]}); pass --lut PATH_OR_ID")  # fmt: skip
            if required:
                raise LutError(msg)
            log.warning("%s; no prediction in the report", msg)
            return None
    if found.space != arch.space:
        raise LutError(f"arch {arch.label} is of space {arch.space!r}, the LUT {found.id} of "
                       f"{found.space!r}: give a LUT of the arch's space (or the arch searched on it)")  # fmt: skip
    return found



def prediction(lut: Lut, lut_arch: Arch, trained: Arch, num_classes: int) -> dict[str, Any]:
    """The LUT's prediction of `lut_arch` (additive and corrected, `lut.correction.predict_arch`)
    and how the trained network differs from what the LUT measured.

    `same_ops` is True when the trained network runs exactly the LUT arch's ops (same space, head
    and classifier). Otherwise `notes` say what differs; `additive_without_classifier_us` is the
    LUT's sum without its classifier op (a lower bound when only the classifier is narrower);
    `trained_additive_us` is the LUT's sum over the trained network's own ops when the LUT has
    every one of them (e.g. a LUT of the proxy space), else None."""
    out = dict(predict_arch(lut, lut_arch))
    lut_ops = arch_ops(lut_arch)
    space = get_space(trained.space)
    trained_ops = arch_ops(trained, replace(space, num_classes=num_classes))
    lut_keys, trained_keys = [o.key for o in lut_ops], [o.key for o in trained_ops]
    classifier_us = lut.op_latency_us(lut_keys[-1])
    notes: list[str] = []
    if trained.space != lut_arch.space:
        notes.append(
            f"trained at {trained.space} ({space.resolution}×{space.resolution}, width {space.width_mult:g}), "
            f"the LUT measured {lut_arch.space}: the deployed network has other shapes than the predicted one "
            "(train with --scale lut to deploy the LUT's own shapes)"
        )
    elif lut_keys[:-1] != trained_keys[:-1]:
        notes.append("the trained network's ops differ from the LUT arch's (head width)")
    if lut_ops[-1].c_out != num_classes:
        note = (f"classifier: the deployed network has {num_classes} classes, the LUT's classifier op "
                f"{lut_keys[-1]} has {lut_ops[-1].c_out} ({classifier_us:.1f} µs of the prediction) and "
                "the deployed one is not in the LUT")  # fmt: skip
        if not notes and num_classes < lut_ops[-1].c_out:
            lo = out["additive_us"] - classifier_us
            note += f"; by the LUT's sum it takes {lo / 1e3:.3f}–{out['additive_us'] / 1e3:.3f} ms"
        notes.append(note)
    try:
        trained_additive = float(lut.predict_us(trained_keys))
    except LutCoverageError:
        trained_additive = None
    out.update({
        "lut_path": str(lut.path),
        "lut_device_id": lut.device_id,
        "lut_runtime": lut.runtime.get("name"),
        "lut_dtype": lut_runtime_of(lut)["dtype"],
        "lut_threads": lut_runtime_of(lut)["threads"],
        "lut_layout": lut_runtime_of(lut)["layout"],
        "space": lut_arch.space,
        "same_ops": lut_keys == trained_keys,
        "classifier_lut_us": classifier_us,
        "additive_without_classifier_us": out["additive_us"] - classifier_us,
        "trained_additive_us": trained_additive,
        "notes": notes,
    })  # fmt: skip
    return out


def comparison_notes(pred: dict[str, Any], measured: dict[str, Any], dtype: str) -> list[str]:
    """What else differs between the LUT and a measurement: runtime, layout, dtype, threads, device."""
    notes = []
    if measured.get("runtime") != pred.get("lut_runtime"):
        notes.append(f"measured with {measured.get('runtime')}, the LUT is {pred.get('lut_runtime')}")
    elif measured.get("layout") != pred.get("lut_layout"):
        notes.append(f"measured with {measured.get('layout')} I/O, the LUT's ops with {pred.get('lut_layout')}")
    if dtype != pred.get("lut_dtype", "fp32"):
        notes.append(f"measured {dtype}, the LUT is {pred.get('lut_dtype', 'fp32')}")
    if pred.get("lut_threads") is not None and measured.get("threads") != pred.get("lut_threads"):
        notes.append(f"measured with {measured.get('threads')} thread(s), the LUT with {pred.get('lut_threads')}")
    if measured.get("device_id") != pred.get("lut_device_id"):
        notes.append(f"measured on {measured.get('device_id')}, the LUT is of {pred.get('lut_device_id')}")
    return notes


def lut_runtime_of(lut: Lut) -> dict[str, Any]:
    """{runtime, dtype, threads, layout} of a LUT: its metadata, else its directory name (a LUT
    without a recorded layout was exported NCHW, the layout before layouts were recorded)."""
    rt = lut.runtime
    if rt.get("name") and rt.get("threads"):
        name, dtype, threads = str(rt["name"]), str(rt.get("dtype") or "fp32"), int(rt["threads"])
    else:
        name, dtype, threads = parse_runtime_dir_name(lut.runtime_dir)
    return {"runtime": name, "dtype": dtype, "threads": threads, "layout": str(rt.get("layout") or "nchw")}


def describe(exports: Sequence[Mapping[str, Any]], pred: Mapping[str, Any] | None) -> list[str]:
    """Human-readable lines: each export, its measurement and notes, then the LUT's prediction."""
    lines = []
    for rec in exports:
        lines.append(f"  {rec['runtime']} {rec['dtype']}: {rec['export_path']} ({rec['size_bytes']} bytes, "
                     f"sha256 {rec['sha256'][:12]})")  # fmt: skip
        if "stats" in rec:
            s = rec["stats"]
            lines.append(f"    measured on {rec['device']} ({rec['device_id']}): median {s['median_us'] / 1e3:.3f} ms "
                         f"(p10 {s['p10_us'] / 1e3:.3f}, p90 {s['p90_us'] / 1e3:.3f}, n {s['n']})")  # fmt: skip
            lines += [f"    note: {n}" for n in rec.get("vs_lut_notes", [])]
    if pred is not None:
        corr = "-" if pred["corrected_us"] is None else f"{pred['corrected_us'] / 1e3:.3f} ms"
        lines.append(f"  LUT {pred['lut']} predicts {pred['arch']} at {pred['space']}: "
                     f"{pred['predicted_us'] / 1e3:.3f} ms (additive {pred['additive_us'] / 1e3:.3f} ms, "
                     f"corrected {corr})")  # fmt: skip
        lines += [f"    note: {n}" for n in pred["notes"]]
    return lines
