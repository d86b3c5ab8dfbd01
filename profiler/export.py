"""The export cache: one exported model file per (op or arch, runtime, exporter versions, graph).

Layout: `<root>/<runtime>[-int8][-nchw]/<versions-hash>/<key><suffix>` beside `<key>.graph`, where root
is `HWNAS_CACHE` or `.cache/exports`, `versions-hash` covers the runtime's exporter versions and
the export options (dtype, layout), and `key` is the op key (or `Arch.id` for whole architectures). `<key>.graph` holds the
fingerprint of the module that was exported (`graph_fingerprint`: every submodule's configuration
and the code of every project-defined `forward`): a cached file is reused only while the module
built for its key today has the same fingerprint, so an edit that changes what a block computes
re-exports exactly the items it changes, and a docstring or comment edit re-exports nothing.
Files are written to a temp name and renamed, so a crash never leaves a half-written model
under its final name.

A failed export leaves `<key>.failed.txt` with the exporter's message; later runs report it
again without retrying, unless asked to (`retry_failed=True`, CLI `--retry-failed`).

Exports can run in a pool of worker processes (spawned, one torch thread each): on 2 cores, two
workers roughly halve the cold build time of a space.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import inspect
import json
import logging
import multiprocessing
import os
import textwrap
import time
import uuid
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from tqdm import tqdm

from lut.files import atomic_write
from profiler.runtimes import ExportError, Runtime, get_runtime
from search.space import Arch, Network, Op, arch_ops, parse_op_key
from search.space.modules import Overhead, Replicas, build_op

__all__ = ["ExportItem", "ExportCache", "ExportReport", "graph_fingerprint", "default_cache_root", "quiet_exporter_noise"]

log = logging.getLogger(__name__)

CACHE_FORMAT = 2  # bump when the cache layout or the way items are built changes
MIN_ITEMS_PER_WORKER = 6  # below this, worker start-up (imports, ~10 s) costs more than it saves


def default_cache_root() -> Path:
    return Path(os.environ.get("HWNAS_CACHE", ".cache/exports"))


@functools.lru_cache(maxsize=None)
def _forward_code(cls: type) -> str:
    """The AST of `cls.forward` without docstrings: what the method computes, not how it reads."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls.forward)))
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and isinstance(
            getattr(body[0], "value", None), ast.Constant
        ) and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree, annotate_fields=False)


def graph_fingerprint(module: nn.Module, example_input: torch.Tensor) -> str:
    """What an exported graph depends on, hashed: the module tree with every submodule's
    configuration (`repr`: channels, kernels, strides, groups, eps, ...), the code of each
    project-defined `forward` (torch's own modules are covered by the torch version in the
    versions hash), and the input shape and dtype."""
    classes = sorted({type(m) for m in module.modules()}, key=lambda c: f"{c.__module__}.{c.__qualname__}")
    code = [_forward_code(c) for c in classes if not c.__module__.startswith("torch.")]
    blob = json.dumps([repr(module), code, list(example_input.shape), str(example_input.dtype)])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ExportItem:
    """Something to export: an op (by key), or a whole arch as its ops (keys, in network order).

    An arch item carries its op keys rather than its space's name, so it builds the same network
    in any process (export workers know nothing of spaces registered at run time)."""

    key: str
    op_keys: tuple[str, ...] | None = None  # a whole arch's ops; None for an op
    replicas: int = 1  # an op: >1 exports that many independent copies reading one input

    @classmethod
    def for_op(cls, op: Op, replicas: int = 1) -> "ExportItem":
        return cls(op.key, replicas=replicas)

    @property
    def file_stem(self) -> str:
        """The export's file stem: the op key (or arch id), `-x<copies>` for replicas."""
        return self.key if self.replicas == 1 else f"{self.key}-x{self.replicas}"

    @classmethod
    def for_arch(cls, arch: Arch) -> "ExportItem":
        return cls(arch.id, tuple(op.key for op in arch_ops(arch)))

    def build(self, overhead: str = "sampler") -> tuple[nn.Module, torch.Tensor]:
        """The module (eval mode, weights seeded without touching the caller's RNG state) and its
        example input. `overhead`: the form of an overhead op (`RuntimeInfo.overhead`)."""

        def make(op: Op) -> nn.Module:
            if op.block == "overhead":
                return Overhead(op.c_in, op.c_out, form=overhead).eval()
            return build_op(op)

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            if self.op_keys is None:
                op = parse_op_key(self.key)
                module = make(op) if self.replicas == 1 else Replicas(op, self.replicas, make).eval()
                return module, op.example_input()
            ops = [parse_op_key(k) for k in self.op_keys]
            return Network(ops).eval(), ops[0].example_input()


@dataclass
class ExportReport:
    paths: dict[str, Path] = field(default_factory=dict)  # key → model file, for every exported item
    failed: dict[str, str] = field(default_factory=dict)  # key → exporter message
    exported: int = 0  # exported in this call
    cached: int = 0  # found in the cache
    elapsed_s: float = 0.0


def _versions_hash(runtime: Runtime) -> str:
    blob = json.dumps(
        {
            "format": CACHE_FORMAT,
            "versions": runtime.versions(),
            **runtime.export_options,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _export_one(runtime: Runtime, item: ExportItem, path: Path) -> str | None:
    """Export `item` to `path` atomically, then record its graph fingerprint beside it; None on
    success, else the error message (also written to the failure marker)."""
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")
    try:
        module, x = item.build(runtime.info.overhead)
        runtime.export(module, x, tmp)
        os.replace(tmp, path)
        atomic_write(_graph_file(path), graph_fingerprint(module, x))
        return None
    except (ExportError, ValueError) as e:  # ValueError: the item cannot be built
        msg = str(e) or type(e).__name__
        atomic_write(path.with_name(path.stem + ".failed.txt"), msg)
        return msg
    finally:
        if tmp.exists():
            tmp.unlink()


def _graph_file(model_path: Path) -> Path:
    return model_path.with_name(model_path.stem + ".graph")


_WORKER_RUNTIME: Runtime | None = None


def quiet_exporter_noise() -> None:
    """Silence third-party chatter that every export repeats and that says nothing about our ops:
    optional torchao kernels this CPU build lacks, torchvision ops the ONNX registry skips, and
    torch's own pytree deprecation notices. Real export errors still surface."""
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*", category=FutureWarning)
    warnings.filterwarnings("ignore", message=r".*Enum subclass.*register_constant.*")
    for name in ("torchao", "torchao.kernel.intmm", "torch.onnx._internal.exporter._registration"):
        logging.getLogger(name).setLevel(logging.ERROR)
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)


def _worker_init(runtime_name: str, dtype: str, layout: str) -> None:
    global _WORKER_RUNTIME
    torch.set_num_threads(1)  # workers share the cores; one thread each
    logging.basicConfig(level=logging.WARNING)
    quiet_exporter_noise()
    _WORKER_RUNTIME = get_runtime(runtime_name, dtype, layout)


def _worker_export(item: ExportItem, path: str) -> tuple[str, str | None]:
    if _WORKER_RUNTIME is None:
        raise RuntimeError("export worker used without _worker_init")
    return item.key, _export_one(_WORKER_RUNTIME, item, Path(path))


class ExportCache:
    """Exported model files of one runtime (and dtype), keyed by op key or arch key."""

    def __init__(self, runtime: Runtime, root: str | Path | None = None) -> None:
        self.runtime = runtime
        self.root = Path(root) if root is not None else default_cache_root()
        sub = runtime.name if runtime.dtype == "fp32" else f"{runtime.name}-{runtime.dtype}"
        sub += "" if runtime.layout == runtime.info.layouts[0] else f"-{runtime.layout}"
        self.dir = self.root / sub / _versions_hash(runtime)

    def path(self, stem: str) -> Path:
        """The file of an item's `file_stem` (its op key or arch id, or `<op key>-x<copies>`)."""
        return self.dir / f"{stem}{self.runtime.suffix}"

    def is_current(self, item: ExportItem) -> bool:
        """The item's file exists and was exported from the module its key builds today."""
        path = self.path(item.file_stem)
        try:
            recorded = _graph_file(path).read_text()
        except FileNotFoundError:
            return False
        if not path.is_file():
            return False
        module, x = item.build(self.runtime.info.overhead)
        return recorded == graph_fingerprint(module, x)

    def failure(self, stem: str) -> str | None:
        """The remembered export error of an item (by `file_stem`), if its last export failed."""
        try:
            return (self.dir / f"{stem}.failed.txt").read_text()
        except FileNotFoundError:
            return None

    def ensure(
        self,
        items: Sequence[ExportItem],
        *,
        workers: int | None = None,
        retry_failed: bool = False,
        progress: bool = True,
    ) -> ExportReport:
        """Export what is not cached yet. `workers=None` picks min(cores, 4) processes when
        there are enough items to amortize their start-up, else exports in-process."""
        t0 = time.perf_counter()
        self.dir.mkdir(parents=True, exist_ok=True)
        report = ExportReport()
        todo: list[ExportItem] = []
        by_key = dict((i.key, i) for i in items)  # report keys: op keys / arch ids
        for item in by_key.values():
            if self.is_current(item):
                report.paths[item.key] = self.path(item.file_stem)
                report.cached += 1
            elif not retry_failed and (msg := self.failure(item.file_stem)) is not None:
                report.failed[item.key] = msg
            else:
                (self.dir / f"{item.file_stem}.failed.txt").unlink(missing_ok=True)
                todo.append(item)
        if todo:
            n_workers = workers if workers is not None else min(os.cpu_count() or 1, 4)
            n_workers = max(1, min(n_workers, len(todo) // MIN_ITEMS_PER_WORKER))
            log.info("exporting %d model(s) for %s with %d process(es); %d cached",
                     len(todo), self.dir.parent.name, n_workers, report.cached)
            bar = tqdm(total=len(todo), desc=f"export {self.dir.parent.name}", unit="model",
                       disable=not progress, leave=False)
            results = self._run(todo, n_workers, bar)
            bar.close()
            for key, err in results:
                if err is None:
                    report.paths[key] = self.path(by_key[key].file_stem)
                    report.exported += 1
                else:
                    report.failed[key] = err
                    log.warning("export failed for %s: %s", key, err.splitlines()[0] if err else "")
        report.elapsed_s = time.perf_counter() - t0
        return report

    def _run(self, todo: list[ExportItem], n_workers: int, bar: tqdm) -> list[tuple[str, str | None]]:
        results: list[tuple[str, str | None]] = []
        if n_workers == 1:
            for item in todo:
                results.append((item.key, _export_one(self.runtime, item, self.path(item.file_stem))))
                bar.update()
            return results
        ctx = multiprocessing.get_context("spawn")  # fork after torch/threads is unsafe
        with ProcessPoolExecutor(
            n_workers, mp_context=ctx, initializer=_worker_init,
            initargs=(self.runtime.name, self.runtime.dtype, self.runtime.layout),
        ) as pool:  # fmt: skip
            futures = [pool.submit(_worker_export, item, str(self.path(item.file_stem))) for item in todo]
            for fut in as_completed(futures):
                results.append(fut.result())
                bar.update()
        return results
