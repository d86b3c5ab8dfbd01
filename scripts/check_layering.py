"""Imports against the project's one-way direction, and import circles between modules.

    python scripts/check_layering.py [ROOT]      (exit 1 when it finds either; ROOT defaults to .)

Direction (the design's picture): hwnas.flags (the command-line vocabulary, standard library
only) <- search.space <- lut <- profiler / search; android_harness stands alone (its loopback
device may use the profiler's runtimes); bench and the `hwnas` command sit on top.

Circles: every `import` in the packages, function-level ones included (a function-level import
that reaches back hides a circle), becomes an edge between modules; imports under
`if TYPE_CHECKING:` run never and are left out. A strongly connected set of two or more modules
is a circle, inside a package as much as between packages.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGES = ["hwnas", "search", "profiler", "lut", "android_harness", "bench"]
EXTERNAL = {"torch"}  # third-party imports the direction restricts
ALLOWED = {  # unit -> units it may import
    "flags": {"flags"},
    "space": {"space", "flags", "torch"},
    "android_harness": {"android_harness", "flags"},
    "loopback": {"loopback", "android_harness", "profiler", "space", "flags", "torch"},
    "lut": {"lut", "space", "flags"},
    "profiler": {"profiler", "lut", "space", "android_harness", "flags", "torch"},
    "search": {"search", "lut", "space", "flags", "torch"},
    "bench": {"bench", "search", "lut", "space", "profiler", "android_harness", "flags", "torch"},
    "hwnas": {"hwnas", "flags", "search", "lut", "space", "profiler", "android_harness", "torch"},
}
EXCEPTIONS = {  # (file, unit it may import besides its own allowance): why
    ("android_harness/__main__.py", "loopback"): "the harness CLI starts the loopback device",
}


def unit(module: str) -> str:
    p = module.split(".")
    if p[:2] == ["search", "space"]:
        return "space"
    if p[:2] == ["android_harness", "loopback"]:
        return "loopback"
    if p[:2] == ["hwnas", "flags"]:
        return "flags"
    return p[0]


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(tree: ast.AST) -> set[int]:
    """Ids of the import nodes under `if TYPE_CHECKING:`."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else test.attr if isinstance(test, ast.Attribute) else None
            if name == "TYPE_CHECKING":
                skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skip


def imports(root: Path, path: Path, modules: set[str]) -> list[tuple[str, int]]:
    """(imported module, line) of one file: project modules by their file, torch by name."""
    src = module_name(root, path)
    tree = ast.parse(path.read_text(), filename=str(path))
    skip = _type_checking_only(tree)
    out = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = src.split(".")
                if path.name != "__init__.py":
                    base = base[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for a in node.names:  # `from pkg import submodule` imports the submodule
                sub = f"{target}.{a.name}"
                out.append((sub if sub in modules else target, node.lineno))
    keep = []
    for name, line in out:
        top = name.split(".")[0]
        if top in EXTERNAL:
            keep.append((top, line))
        elif top in PACKAGES:
            while name not in modules and "." in name:  # `import a.b.c` where c is an attribute
                name = name.rsplit(".", 1)[0]
            keep.append((name, line))
    return keep


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected sets of two or more modules (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in graph:
                    continue
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    members = []
                    while True:
                        m = stack.pop()
                        on_stack.discard(m)
                        members.append(m)
                        if m == node:
                            break
                    if len(members) > 1:
                        found.append(sorted(members))
    return found


def check(root: Path) -> list[str]:
    files = {module_name(root, f): f for pkg in PACKAGES if (root / pkg).is_dir() for f in sorted((root / pkg).rglob("*.py"))}
    modules = set(files)
    problems = []
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for src, path in files.items():
        rel = path.relative_to(root).as_posix()
        for dst, line in imports(root, path, modules):
            a, b = unit(src), unit(dst)
            if b not in ALLOWED[a] and (rel, b) not in EXCEPTIONS:
                problems.append(f"{rel}:{line}: {a} imports {dst}")
            if dst in modules and dst != src:
                graph[src].add(dst)
    for members in circles(graph):
        problems.append(f"import circle: {' <-> '.join(members)}")
    return sorted(set(problems))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    root = Path(argv[0] if argv else ".").resolve()
    problems = check(root)
    for p in problems:
        print(p)
    print(f"layering: {len(problems)} problem(s) (direction flags <- space <- lut <- profiler/search; "
          "android_harness alone; no import circles)")  # fmt: skip
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
