"""The `hwnas` console script: the entry point pyproject.toml declares, its subcommands."""

from __future__ import annotations

import importlib
import json
import tomllib
from pathlib import Path

import pytest

from hwnas.cli import COMMANDS, REGISTRIES

ROOT = Path(__file__).resolve().parent.parent


def console_script():
    """The function `pip install` makes the `hwnas` command call."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, function = scripts["hwnas"].partition(":")
    return getattr(importlib.import_module(module), function)


def run_hwnas(monkeypatch, *argv: str) -> int:
    monkeypatch.setattr("sys.argv", ["hwnas", *argv])
    return console_script()()


def test_help_lists_every_subcommand(monkeypatch, capsys) -> None:
    assert run_hwnas(monkeypatch, "--help") == 0
    out = capsys.readouterr().out
    for name in [*COMMANDS, "list"]:
        assert f"    {name}" in out, name
    for name in ("profile", "lut", "search", "train", "crossdevice", "devices", "doctor", "deploy"):
        assert name in COMMANDS


def test_every_subcommand_reaches_a_main() -> None:
    for name, cmd in COMMANDS.items():
        assert callable(importlib.import_module(cmd.module).main), name


@pytest.mark.parametrize("registry", list(REGISTRIES))
def test_list_reads_the_registries(registry: str, monkeypatch, capsys) -> None:
    assert run_hwnas(monkeypatch, "list", registry, "--json") == 0
    rows = json.loads(capsys.readouterr().out)
    names = {r["name"] for r in rows}
    expected = {"spaces": "fbnet", "blocks": "k5_e6", "strategies": "proxyless", "runtimes": "onnxruntime",
                "formats": "hwnasbench"}[registry]  # fmt: skip
    assert expected in names


def test_subcommand_runs_the_module(monkeypatch, capsys, tmp_path) -> None:
    assert run_hwnas(monkeypatch, "lut", "list", "--luts-root", str(tmp_path)) == 0
    assert f"no LUTs under {tmp_path}" in capsys.readouterr().out
    assert run_hwnas(monkeypatch, "space", "info", "--space", "fbnet", "--json") == 0
    assert json.loads(capsys.readouterr().out)["space"] == "fbnet"


def test_unknown_command_exits_2(monkeypatch, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        run_hwnas(monkeypatch, "profiel")
    assert e.value.code == 2
    assert "unknown command 'profiel'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        run_hwnas(monkeypatch, "list", "archs")
    assert e.value.code == 2
