"""The versioned LUT store.

Layout (DESIGN.md): `<root>/<device_id>/<space>/<runtime_dir>/v<N>/` holding table.csv,
samples.csv.gz and meta.json (see `lut.schema`). `runtime_dir_name` makes the `<runtime_dir>`
part ("executorch-t1", "tflite-int8-t1"). Versions are immutable: `write_lut` always creates the
next `v<N>`, atomically (files are written and fsynced in a hidden temp dir that is then renamed).

A LUT is addressed by a path (a version dir, or a runtime dir meaning its latest version) or by
an id relative to the root: "device_id/space/runtime_dir[/vN]".

`content_hash` covers table.csv and the uncompressed samples CSV; `load_lut` recomputes the table
hash, so a truncated or edited table is rejected, and `Lut.samples` does the same for samples.
meta.json carries `meta_hash`, the sha256 of its own canonical JSON without that key
(`meta_hash_of`): every read recomputes it, so an edited meta.json (another device, protocol or
settings record pasted in) is rejected like an edited table. Versions written before it was
recorded have none and are read as they are.
"""

from __future__ import annotations

import datetime as _dt
import gzip
import hashlib
import io
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from search.space import op_key, overhead_op, parse_op_key

from .files import fsync_dir
from .schema import TABLE_COLUMNS, SchemaError, check_meta, check_samples, check_table

__all__ = [
    "SCHEMA_VERSION",
    "INCOMPLETE_DIR",
    "INCOMPLETE_FILE",
    "PROVENANCES",
    "TOOL_VERSION",
    "LutError",
    "LutCoverageError",
    "Lut",
    "runtime_dir_name",
    "parse_runtime_dir_name",
    "write_lut",
    "load_lut",
    "list_versions",
    "list_luts",
    "meta_hash_of",
]

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
# A measurement job's work dir beside the versions: a job in progress, interrupted, or (with
# INCOMPLETE_FILE in it) finished with failed ops and not published. It is never a version.
INCOMPLETE_DIR = ".partial"
INCOMPLETE_FILE = "incomplete.json"
PROVENANCES = ("measured", "loopback", "imported", "synthetic")  # where a LUT's numbers come from
_VERSION_DIR = re.compile(r"^v(\d+)$")
_RUNTIME_DIR = re.compile(r"^(?P<runtime>[a-z0-9_]+?)(?:-(?P<dtype>int8|fp16))?-t(?P<threads>\d+)$")


def _tool_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hwnas")
    except PackageNotFoundError:  # running from a source checkout: read pyproject.toml
        import tomllib

        pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
        try:
            return tomllib.loads(pyproject.read_text())["project"]["version"]
        except (OSError, KeyError, tomllib.TOMLDecodeError):
            return "unknown"


TOOL_VERSION = _tool_version()


class LutError(ValueError):
    """A LUT cannot be found, read or trusted; the message names the path and the reason."""


class LutCoverageError(LutError):
    """A LUT lacks ops (or has them only as failed); `missing` lists their keys."""

    def __init__(self, missing: Sequence[str], where: str = "") -> None:
        self.missing = list(missing)
        shown = ", ".join(self.missing[:20]) + (" ..." if len(self.missing) > 20 else "")
        super().__init__(
            f"LUT{' ' + where if where else ''} lacks {len(self.missing)} op(s) (missing or "
            f"failed): {shown}. Re-profile the space (python -m profiler.run) to add them."
        )


# --- names --------------------------------------------------------------------------------------
def runtime_dir_name(runtime: str, threads: int, dtype: str = "fp32") -> str:
    """'executorch', 1 → 'executorch-t1'; 'tflite', 1, 'int8' → 'tflite-int8-t1'."""
    if threads < 1:
        raise ValueError(f"threads must be ≥ 1, got {threads}")
    return f"{runtime}-t{threads}" if dtype == "fp32" else f"{runtime}-{dtype}-t{threads}"


def parse_runtime_dir_name(name: str) -> tuple[str, str, int]:
    """Inverse of `runtime_dir_name`: 'tflite-int8-t1' → ('tflite', 'int8', 1)."""
    m = _RUNTIME_DIR.match(name)
    if m is None:
        raise ValueError(f"malformed runtime dir name {name!r}; expected RUNTIME[-DTYPE]-t<threads>")
    return m["runtime"], m["dtype"] or "fp32", int(m["threads"])


# --- hashing and serialization ------------------------------------------------------------------
def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def meta_hash_of(meta: dict[str, Any]) -> str:
    """sha256 of meta.json's canonical JSON (keys sorted, compact), `meta_hash` itself left out.
    Taken after a JSON round trip, so that what is hashed is what a reader loads."""
    canon = json.loads(json.dumps({k: v for k, v in meta.items() if k != "meta_hash"}))
    return _sha256(json.dumps(canon, sort_keys=True, separators=(",", ":")).encode())


def _table_bytes(table: pd.DataFrame) -> bytes:
    return table.to_csv(index=False, float_format="%.3f", lineterminator="\n").encode()


def _samples_bytes(samples: pd.DataFrame) -> bytes:
    return samples.to_csv(index=False, float_format="%.3f", lineterminator="\n").encode()


def _write_file(path: Path, data: bytes) -> None:
    """A new file inside the hidden temp version dir (the dir's rename makes it atomic)."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def list_versions(runtime_dir: str | Path) -> list[int]:
    """Version numbers present under a runtime dir, ascending."""
    p = Path(runtime_dir)
    if not p.is_dir():
        return []
    return sorted(int(m[1]) for d in p.iterdir() if d.is_dir() and (m := _VERSION_DIR.match(d.name)))


def write_lut(
    root: str | Path,
    *,
    device_id: str,
    space: str,
    runtime_dir: str,
    table: pd.DataFrame,
    samples: pd.DataFrame,
    meta: dict[str, Any],
    parent: int | None = None,
) -> Path:
    """Write the next version of a LUT atomically and return its directory.

    Fills in schema_version, version, parent, content_hash, file_hashes, created_at,
    tool_version and counts. `parent=None` means "the latest existing version, if any".
    """
    try:
        table = check_table(table)
        samples = check_samples(samples).reset_index(drop=True)
    except SchemaError as e:
        raise LutError(f"cannot write LUT {device_id}/{space}/{runtime_dir}: {e}") from None
    base = Path(root) / device_id / space / runtime_dir
    base.mkdir(parents=True, exist_ok=True)
    table_b = _table_bytes(table)
    samples_b = _samples_bytes(samples)
    samples_gz = gzip.compress(samples_b, compresslevel=6, mtime=0)
    meta = dict(meta)
    meta.setdefault("device", {})
    meta["device"] = {**meta["device"], "device_id": device_id}
    status = table["status"].value_counts()
    meta.update(
        schema_version=SCHEMA_VERSION,
        content_hash=_sha256(b"table.csv\n" + table_b + b"samples.csv\n" + samples_b),
        file_hashes={"table.csv": _sha256(table_b), "samples.csv": _sha256(samples_b)},
        created_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        tool_version=TOOL_VERSION,
        counts={
            "ops": int(len(table)),
            "ok": int(status.get("ok", 0)),
            "failed": int(status.get("failed", 0)),
            "identity": int(status.get("identity", 0)),
            "overhead": int((table["block"] == "overhead").sum()),
            "samples": int(len(samples)),
        },
    )
    for key in ("overhead_us", "failed_ops", "exporters", "space", "protocol", "runtime"):
        meta.setdefault(key, {} if key != "overhead_us" else None)
    if meta.get("provenance") is not None and meta["provenance"] not in PROVENANCES:
        raise LutError(f"provenance must be one of {PROVENANCES}, got {meta['provenance']!r}")
    meta["provenance"] = provenance_of(meta)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=base))
    try:
        _write_file(tmp / "table.csv", table_b)
        _write_file(tmp / "samples.csv.gz", samples_gz)
        for _attempt in range(100):  # another writer may take a version number first
            versions = list_versions(base)
            version = (versions[-1] + 1) if versions else 1
            meta["version"] = version
            meta["parent"] = parent if parent is not None else (versions[-1] if versions else None)
            meta["meta_hash"] = meta_hash_of(meta)
            _write_file(tmp / "meta.json", (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode())
            fsync_dir(tmp)
            target = base / f"v{version}"
            try:
                os.rename(tmp, target)  # fails if the target exists and is not empty
            except OSError:
                if target.exists():
                    continue
                raise
            fsync_dir(base)
            log.info("wrote LUT %s", target)
            return target
        raise LutError(f"could not claim a version number under {base} after 100 attempts")
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# --- reading ------------------------------------------------------------------------------------
def _resolve(path_or_id: str | Path, root: str | Path) -> Path:
    cands = [Path(path_or_id)]
    if not Path(path_or_id).is_absolute():
        cands.append(Path(root) / str(path_or_id))
    for p in cands:
        if (p / "meta.json").is_file() or (p.is_dir() and _VERSION_DIR.match(p.name)):
            return p
        versions = list_versions(p)
        if versions:
            return p / f"v{versions[-1]}"
    for p in cands:
        job = _incomplete_job(p)
        if job is not None:
            raise LutError(
                f"no LUT version at {str(path_or_id)!r}: only a {job['status']} measurement job ({job['detail']}) "
                f"in {p / INCOMPLETE_DIR}; run its profiler.run command again (with --retry-failed to measure "
                "failed ops again, or --allow-failed to publish it with gaps)"
            )
    raise LutError(
        f"no LUT at {str(path_or_id)!r} (looked for a version dir, a runtime dir with v<N> "
        f"subdirs, or an id 'device_id/space/runtime_dir[/vN]' under {str(root)!r}); "
        "`python -m lut list` shows what exists"
    )


def _incomplete_job(runtime_dir: Path) -> dict[str, Any] | None:
    """status ("incomplete": finished with failed ops; "interrupted": stopped or running), failed
    count and a detail line of the job work dir under a runtime dir, or None."""
    work = runtime_dir / INCOMPLETE_DIR
    if not (work / "job.json").is_file():
        return None
    try:
        record = json.loads((work / INCOMPLETE_FILE).read_text())
    except FileNotFoundError:
        return {"status": "interrupted", "failed": None, "detail": "stopped before it finished, or still running"}
    except (OSError, json.JSONDecodeError) as e:
        return {"status": "incomplete", "failed": None, "detail": f"{INCOMPLETE_FILE} unreadable: {e}"}
    n = record.get("num_failed")
    return {"status": "incomplete", "failed": n, "detail": f"{n} of {record.get('num_ops')} ops failed"}


def _read_meta(path: Path) -> dict[str, Any]:
    f = path / "meta.json"
    try:
        meta = json.loads(f.read_text())
    except FileNotFoundError:
        raise LutError(f"{f}: missing (not a complete LUT version dir)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LutError(f"{f}: unreadable or corrupt JSON ({e})") from None
    if not isinstance(meta, dict):
        raise LutError(f"{f}: corrupt (expected a JSON object)")
    sv = meta.get("schema_version")
    if sv != SCHEMA_VERSION:
        raise LutError(
            f"{f}: schema_version {sv!r} is not supported (this code reads schema_version "
            f"{SCHEMA_VERSION}); re-profile, or use the hwnas version that wrote it"
        )
    if "meta_hash" in meta and meta["meta_hash"] != meta_hash_of(meta):
        raise LutError(
            f"{f}: content does not match its meta_hash (the file was edited after it was written); "
            "restore it from git or re-profile"
        )
    try:
        return check_meta(meta)
    except SchemaError as e:
        raise LutError(f"{f}: {e}") from None


def _read_table(path: Path, meta: dict[str, Any]) -> pd.DataFrame:
    f = path / "table.csv"
    try:
        data = f.read_bytes()
    except OSError as e:
        raise LutError(f"{f}: cannot read ({e.strerror})") from None
    expected = (meta.get("file_hashes") or {}).get("table.csv")
    if expected is not None and _sha256(data) != expected:
        raise LutError(
            f"{f}: content does not match the hash in meta.json (the file was truncated or "
            "edited); restore it from git or re-profile"
        )
    try:
        raw = pd.read_csv(io.BytesIO(data), dtype={"op_key": str, "error": str}, keep_default_na=False,
                          na_values={c: [""] for c in TABLE_COLUMNS if c not in ("op_key", "block", "status", "error")})
        table = check_table(raw)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, SchemaError) as e:
        raise LutError(f"{f}: corrupt table ({e})") from None
    counts = meta.get("counts") or {}
    if "ops" in counts and counts["ops"] != len(table):
        raise LutError(f"{f}: truncated: {len(table)} rows, meta.json says {counts['ops']}")
    return table.set_index("op_key", drop=True)


class Lut:
    """One LUT version: `meta`, `table` (index op_key) and lazily its raw `samples`."""

    def __init__(self, path: Path, meta: dict[str, Any], table: pd.DataFrame) -> None:
        self.path = path
        self.meta = meta
        self.table = table
        self._samples: pd.DataFrame | None = None
        ovh = table[table["block"] == "overhead"]
        self._overhead: dict[tuple[int, int, int], float] = {
            (int(r.c_in), int(r.h), int(r.w)): float(r.median_us)
            for r in ovh.itertuples()
            if r.status == "ok"
        }
        self._has_overhead_rows = len(ovh) > 0

    def __repr__(self) -> str:
        return f"Lut({self.id!r}, ops={len(self.table)})"

    # --- identity -------------------------------------------------------------------------------
    @property
    def version(self) -> int:
        return int(self.meta["version"])

    @property
    def device_id(self) -> str:
        return str(self.meta["device"]["device_id"])

    @property
    def space(self) -> str:
        return str(self.meta["space"].get("name", self.path.parent.parent.name))

    @property
    def runtime(self) -> dict[str, Any]:
        return dict(self.meta["runtime"])

    @property
    def provenance(self) -> str:
        """Where the numbers come from (`PROVENANCES`): meta.json's `provenance`, or for LUTs
        written before it was recorded, what their metadata shows."""
        return provenance_of(self.meta)

    @property
    def runtime_dir(self) -> str:
        return self.path.parent.name

    @property
    def id(self) -> str:
        return f"{self.device_id}/{self.space}/{self.runtime_dir}/v{self.version}"

    @property
    def samples(self) -> pd.DataFrame:
        """Raw samples (samples.csv.gz), read and hash-checked on first use."""
        if self._samples is None:
            f = self.path / "samples.csv.gz"
            try:
                data = gzip.decompress(f.read_bytes())
            except (OSError, EOFError, gzip.BadGzipFile) as e:
                raise LutError(f"{f}: unreadable or truncated gzip ({e})") from None
            expected = (self.meta.get("file_hashes") or {}).get("samples.csv")
            if expected is not None and _sha256(data) != expected:
                raise LutError(f"{f}: content does not match the hash in meta.json")
            try:
                self._samples = check_samples(pd.read_csv(io.BytesIO(data)))
            except (pd.errors.ParserError, pd.errors.EmptyDataError, SchemaError) as e:
                raise LutError(f"{f}: corrupt samples ({e})") from None
        return self._samples

    # --- latency --------------------------------------------------------------------------------
    def overhead_us(self, c_in: int, h: int, w: int) -> float:
        """Per-invocation overhead at input shape (c_in, h, w); 0.0 for LUTs without overhead
        rows (e.g. imported ones)."""
        if not self._has_overhead_rows:
            return 0.0
        try:
            return self._overhead[(c_in, h, w)]
        except KeyError:
            key = op_key("overhead", c_in=c_in, h=h, w=w, c_out=c_in, stride=1)
            raise LutCoverageError([key], self.id) from None

    def op_latency_us(self, key: str, stat: str = "median_us") -> float:
        """The op's latency minus the overhead of its input shape (≥ 0); identity ops → 0.0."""
        row = self._row(key)
        if row is None:  # identity ops need no row
            return 0.0
        if row["status"] == "identity":
            return 0.0
        if row["status"] != "ok":
            raise LutCoverageError([key], self.id)
        if row["block"] == "overhead":
            return 0.0
        value = float(row[stat]) - self.overhead_us(int(row["c_in"]), int(row["h"]), int(row["w"]))
        return max(value, 0.0)

    def predict_us(self, op_keys: Sequence[str], stat: str = "median_us") -> float:
        """Whole-network latency: Σ op latencies (overhead subtracted per op) + the overhead of
        the first op's input shape once."""
        keys = list(op_keys)
        if not keys:
            raise ValueError("predict_us needs at least one op key")
        self.check_coverage(keys)
        first = parse_op_key(keys[0])
        return sum(self.op_latency_us(k, stat) for k in keys) + self.overhead_us(
            first.c_in, first.h, first.w
        )

    def check_coverage(self, op_keys: Sequence[str]) -> None:
        """Raise LutCoverageError listing ops (and overhead rows) that are missing or failed."""
        missing: list[str] = []
        for key in dict.fromkeys(op_keys):
            op = parse_op_key(key)
            if op.is_identity:
                continue
            if key not in self.table.index or self.table.at[key, "status"] == "failed":
                missing.append(key)
            if self._has_overhead_rows and (op.c_in, op.h, op.w) not in self._overhead:
                missing.append(overhead_op(op).key)
        if missing:
            raise LutCoverageError(list(dict.fromkeys(missing)), self.id)

    def _row(self, key: str) -> pd.Series | None:
        if key in self.table.index:
            return self.table.loc[key]
        if parse_op_key(key).is_identity:
            return None
        raise LutCoverageError([key], self.id)


def provenance_of(meta: dict[str, Any]) -> str:
    """measured (host or phone) | loopback (host CPU through the dry-run adb device, whose
    temperature, frequencies and taskset are sandbox values) | imported (published, one value
    per op) | synthetic (made up for tests and dry runs)."""
    if meta.get("provenance") in PROVENANCES:
        return str(meta["provenance"])
    device = meta.get("device") or {}
    if device.get("synthetic") or (meta.get("protocol") or {}).get("synthetic"):
        return "synthetic"
    if meta.get("source") or meta.get("import_notes") is not None:
        return "imported"
    if device.get("manufacturer") == "hwnas" and device.get("model") == "Loopback":
        return "loopback"
    return "measured"


def load_lut(path_or_id: str | Path, root: str | Path = "luts") -> Lut:
    """Load a LUT version (see module docstring for what `path_or_id` may be)."""
    path = _resolve(path_or_id, root)
    meta = _read_meta(path)
    table = _read_table(path, meta)
    return Lut(path, meta, table)


def list_luts(root: str | Path = "luts") -> list[dict[str, Any]]:
    """One record per version dir under `root` (device, space, runtime, version, created, ops,
    failed, path, status: "complete", or "gaps allowed" for one published with failed ops);
    unreadable versions appear with their error instead of stopping the listing. A measurement job
    that is not a version appears too (version None, status "incomplete": it finished with failed
    ops and was not published; "interrupted": it stopped, or is running)."""
    rows: list[dict[str, Any]] = []
    root = Path(root)
    if not root.is_dir():
        return rows
    for meta_file in sorted(root.glob("*/*/*/v*/meta.json")):
        vdir = meta_file.parent
        row: dict[str, Any] = {
            "device": vdir.parent.parent.parent.name,
            "space": vdir.parent.parent.name,
            "runtime": vdir.parent.name,
            "version": int(vdir.name[1:]) if _VERSION_DIR.match(vdir.name) else None,
        }
        try:
            meta = _read_meta(vdir)
            counts = meta.get("counts") or {}
            row.update(
                provenance=provenance_of(meta),
                created=meta.get("created_at", ""),
                # space ops, as profiler.run reports them; the table also holds overhead rows
                ops=None if "ops" not in counts else counts["ops"] - counts.get("overhead", 0),
                failed=counts.get("failed", len(meta.get("failed_ops") or {})),
                parent=meta.get("parent"),
                validated=(vdir / "validation.json").is_file(),
                error="",
            )
        except LutError as e:
            row.update(provenance=None, created="", ops=None, failed=None, parent=None, validated=False,
                       error=str(e))
        row["path"] = str(vdir)
        row["status"] = "complete" if not row.get("failed") else "gaps allowed"
        rows.append(row)
    for job_file in sorted(root.glob(f"*/*/*/{INCOMPLETE_DIR}/job.json")):
        rdir = job_file.parent.parent
        job = _incomplete_job(rdir) or {}
        rows.append({"device": rdir.parent.parent.name, "space": rdir.parent.name, "runtime": rdir.name,
                     "version": None, "provenance": None, "created": "", "ops": None, "failed": job.get("failed"),
                     "parent": None, "validated": False, "error": "", "path": str(job_file.parent),
                     "status": job.get("status", "interrupted")})  # fmt: skip
    rows.sort(key=lambda r: (r["device"], r["space"], r["runtime"], r["version"] or 1 << 30))
    return rows
