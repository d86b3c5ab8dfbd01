"""The persistent work dir of a job: `<out>/<device_id>/<space>/<runtime_dir>/.partial/`.

    job.json          the job's record (`profiler.protocol.settings.job_record`): settings and op list;
                      a re-run must match it field for field, else it stops naming the fields
    samples.csv       op_key, round, sample, latency_us: one line per sample, an op-round at a time
    rounds.jsonl      the target's state per round (temperature, frequencies, load)
    failed.jsonl      one record per faulty op-round
    extras.jsonl      load time and memory per op-round, where the target reports them
    remeasured.jsonl  one record per op-round dropped for bad conditions (too hot, throttled)
    incomplete.json   written when the job ended with failed ops and no LUT version

Every append is fsynced before the next op-round starts, so a crash loses at most the op-round in
flight; a torn last line is dropped on load.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any, Sequence

from lut.files import append_durable, atomic_write
from lut.store import INCOMPLETE_DIR
from profiler.protocol.config import JobError
from profiler.protocol.settings import settings_diff

__all__ = ["PARTIAL_DIR", "WorkDir"]

log = logging.getLogger(__name__)

PARTIAL_DIR = INCOMPLETE_DIR  # the work dir of a job in progress, interrupted or incomplete


class WorkDir:
    """Append-only, fsynced record of a job in progress."""

    def __init__(self, path: Path, job: dict[str, Any], *, fresh: bool) -> None:
        self.path = path
        self.samples_file = path / "samples.csv"
        self.rounds_file = path / "rounds.jsonl"
        self.failed_file = path / "failed.jsonl"
        self.extras_file = path / "extras.jsonl"
        self.remeasured_file = path / "remeasured.jsonl"
        job_file = path / "job.json"
        if fresh and path.exists():
            shutil.rmtree(path)
        if job_file.is_file():
            old = json.loads(job_file.read_text())
            diff = settings_diff(old, job)
            if diff:
                raise JobError(
                    f"an interrupted job with different settings is waiting in {path}: {'; '.join(diff)}. "
                    "Its samples were taken under its own settings and are not merged with others: re-run "
                    "with the same settings to resume it, or pass --fresh to discard it"
                )
        else:
            path.mkdir(parents=True, exist_ok=True)
            atomic_write(job_file, json.dumps(job, indent=2, sort_keys=True))
        self.samples = self._load_samples()
        self.states = {int(d.pop("round")): d for d in _read_jsonl(self.rounds_file)}
        self.faults = _read_jsonl(self.failed_file)  # one record per fault: op_key, round, error
        self.extras = {(d.pop("op_key"), int(d.pop("round"))): d for d in _read_jsonl(self.extras_file)}
        self.remeasured = _read_jsonl(self.remeasured_file)  # op_key, round, reason: one per dropped op-round

    def _load_samples(self) -> dict[tuple[str, int], list[float]]:
        """Complete op-rounds on disk; a torn last line or a partial op-round is dropped and the
        file rewritten without it."""
        out: dict[tuple[str, int], list[float]] = {}
        if not self.samples_file.is_file():
            self.samples_file.write_text("op_key,round,sample,latency_us\n")
            return out
        lines = self.samples_file.read_text().split("\n")
        torn = lines[-1] != ""  # the file always ends with "\n" after a complete write
        groups: dict[tuple[str, int], list[tuple[int, float]]] = {}
        for line in lines[1:-1]:
            parts = line.split(",")
            if len(parts) != 4:
                continue
            try:
                groups.setdefault((parts[0], int(parts[1])), []).append((int(parts[2]), float(parts[3])))
            except ValueError:
                continue
        runs = json.loads((self.path / "job.json").read_text())["protocol"]["runs"]
        for k, rows in groups.items():
            if [i for i, _ in rows] == list(range(runs)):
                out[k] = [v for _, v in rows]
        if torn or sum(len(v) for v in groups.values()) != len(out) * runs:
            log.warning("dropping an incomplete op-round from %s (interrupted mid-write)", self.samples_file)
            body = "".join(_sample_lines(k, r, v) for (k, r), v in out.items())
            atomic_write(self.samples_file, "op_key,round,sample,latency_us\n" + body)
        return out

    def add_samples(self, key: str, r: int, samples: list[float], extra: dict[str, float] | None = None) -> None:
        if extra:  # before the samples: an op-round on disk always has its extras
            append_durable(self.extras_file, json.dumps({"op_key": key, "round": r, **extra}) + "\n")
            self.extras[(key, r)] = dict(extra)
        append_durable(self.samples_file, _sample_lines(key, r, samples))
        self.samples[(key, r)] = samples

    def add_state(self, r: int, state: dict[str, Any]) -> None:
        append_durable(self.rounds_file, json.dumps({"round": r, **state}) + "\n")
        self.states[r] = state

    def add_fault(self, key: str, r: int, error: str) -> None:
        record = {"op_key": key, "round": r, "error": error}
        append_durable(self.failed_file, json.dumps(record) + "\n")
        self.faults.append(record)

    def add_remeasure(self, key: str, r: int, reason: str) -> None:
        record = {"op_key": key, "round": r, "reason": reason}
        append_durable(self.remeasured_file, json.dumps(record) + "\n")
        self.remeasured.append(record)

    def remeasure_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for d in self.remeasured:
            counts[d["op_key"]] = counts.get(d["op_key"], 0) + 1
        return counts

    def fault_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for d in self.faults:
            counts[d["op_key"]] = counts.get(d["op_key"], 0) + 1
        return counts

    def last_error(self, key: str) -> str:
        errors = [d["error"] for d in self.faults if d["op_key"] == key]
        return errors[-1] if errors else ""


def _sample_lines(key: str, r: int, samples: Sequence[float]) -> str:
    return "".join(f"{key},{r},{i},{v:.3f}\n" for i, v in enumerate(samples))


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a torn last line from an interrupted write
            continue
    return out
