"""Packaging: ranges in pyproject.toml, exact pins in requirements.lock, the Python versions
scripts/env.sh accepts."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def _lock() -> dict[str, Version]:
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        assert sep, f"requirements.lock pins exactly: {line!r}"
        pins[canonicalize_name(name)] = Version(version)
    return pins


def _requirements() -> list[Requirement]:
    project = PYPROJECT["project"]
    reqs = [*project["dependencies"], *[r for extra in project["optional-dependencies"].values() for r in extra]]
    return [Requirement(r) for r in reqs]


def test_pyproject_states_ranges_and_python_311_to_313() -> None:
    spec = SpecifierSet(PYPROJECT["project"]["requires-python"])
    assert all(v in spec for v in ("3.11", "3.12", "3.13")) and "3.10" not in spec and "3.14" not in spec
    for req in _requirements():
        ops = {s.operator for s in req.specifier}
        assert ops == {">=", "<"}, f"{req}: a compatible range (>=X.Y,<X+1), not a pin"


def test_test_tools_are_an_extra() -> None:
    deps = {canonicalize_name(Requirement(r).name) for r in PYPROJECT["project"]["dependencies"]}
    test = {canonicalize_name(Requirement(r).name) for r in PYPROJECT["project"]["optional-dependencies"]["test"]}
    assert {"pytest", "pytest-xdist"} <= test and not deps & test


def test_lock_pins_every_requirement_inside_its_range() -> None:
    pins = _lock()
    for req in _requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not pinned in requirements.lock"
        # the lock's local version (torch's `+cpu`) is inside the range of its public version
        assert req.specifier.contains(Version(pins[name].public)), f"lock pins {name}=={pins[name]} outside {req}"


def _version_check_script() -> str:
    """The interpreter choice and check of scripts/env.sh, alone."""
    text = (REPO / "scripts" / "env.sh").read_text()
    m = re.search(r"^# Python 3\.11.*?\n(.*?\n    exit 1\nfi\n)", text, re.DOTALL | re.MULTILINE)
    assert m, "scripts/env.sh: the Python version check is not where this test looks"
    return "set -euo pipefail\n" + m.group(1) + 'echo "$PY"\n'


def _pythons() -> dict[str, str]:
    found = {}
    roots = [Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"]
    for root in roots:
        for d in sorted(root.glob("3.*")) if root.exists() else []:
            minor = ".".join(d.name.split(".")[:2])
            exe = d / "bin" / "python3"
            if exe.exists():
                found.setdefault(minor, str(exe))
    found.setdefault(f"{sys.version_info[0]}.{sys.version_info[1]}", sys.executable)
    return found


@pytest.mark.parametrize("minor", ["3.10", "3.11", "3.12", "3.13", "3.14"])
def test_env_sh_accepts_python_311_to_313(minor: str) -> None:
    exe = _pythons().get(minor)
    if exe is None:
        pytest.skip(f"no Python {minor} on this machine")
    proc = subprocess.run(["bash", "-c", _version_check_script()], env={**os.environ, "PYTHON": exe}, check=False,
                          capture_output=True, text=True)  # fmt: skip
    if minor in ("3.11", "3.12", "3.13"):
        assert proc.returncode == 0 and proc.stdout.strip() == exe, proc.stderr
    else:
        assert proc.returncode == 1 and "needs Python 3.11, 3.12 or 3.13" in proc.stderr
