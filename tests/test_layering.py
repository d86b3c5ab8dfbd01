"""scripts/check_layering.py: the direction between packages and circles inside one."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("check_layering", ROOT / "scripts" / "check_layering.py")
check_layering = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_layering)


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_the_project_follows_its_layering() -> None:
    assert check_layering.check(ROOT) == []


def test_finds_circles_inside_a_package_and_imports_against_the_direction(tmp_path) -> None:
    root = _write(tmp_path, {
        "search/__init__.py": "",
        "search/space/__init__.py": "from .a import A\n",
        "search/space/a.py": "from .b import B\nA = 1\n",
        "search/space/b.py": "def f():\n    from search.space.a import A  # hides a circle\nB = 2\n",
        "search/space/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .d import D\n",
        "search/space/d.py": "from .c import *\n",
        "lut/__init__.py": "import profiler.run\n",
        "profiler/__init__.py": "",
        "profiler/run.py": "from hwnas.flags import add_device\n",
        "hwnas/__init__.py": "",
        "hwnas/flags.py": "import argparse\n",
    })  # fmt: skip
    problems = check_layering.check(root)
    assert problems == ["import circle: search.space.a <-> search.space.b", "lut/__init__.py:1: lut imports profiler.run"]
