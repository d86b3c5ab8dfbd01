"""Every shell command shown in README.md and docs/*.md runs as written.

The fenced `bash`/`sh`/`shell` blocks of README.md and of every page in docs/ (whatever pages
exist when the tests run) are cut into commands (continuation lines joined, comments dropped).
Each block runs, command by command in its order, in a scratch folder that holds a LUT store:
synthetic `fbnet` LUTs of the device `host-docs` (executorch-t1 and tflite-t1), the HW-NAS-Bench
Pixel 3 and Raspberry Pi 4 LUTs imported from tests/data, and `runs/x/arch.json`. The placeholders
`DEVICE_ID` and `LUT` are filled in (`FILL`); searches and training get a tiny budget appended
(`TINY`, argparse keeps the last value of a flag). Commands that cannot run here are matched by
the `SKIP` table, whose reasons show in pytest's summary.

`python tests/test_docs_commands.py` prints every command with the verdict it gets.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOC_DEVICE = "host-docs"

# placeholder -> value in the scratch store (whole words only)
FILL = {
    "DEVICE_ID": DOC_DEVICE,
    "LUT": f"{DOC_DEVICE}/fbnet/executorch-t1",
}

# a search or a training, as `python -m` or through the console script
SEARCH = r"(-m search\.(run|crossdevice)|^hwnas (search|crossdevice))\b"
TRAIN = r"(-m search\.train|^hwnas train)\b"

# (pattern, reason): the first pattern found in a command (after FILL) skips it. `--help` always runs.
SKIP: list[tuple[str, str]] = [
    (r"\bSERIAL\w*\b|--device [A-Z]\b|--serial\b", "needs a phone attached over adb"),
    (r"127\.0\.0\.1:\d+|\bloopback start\b", "needs the loopback device serving in another shell (it runs until Ctrl-C)"),
    (r"\bcuda\b|--torch-device gpu", "needs a GPU"),
    (r"^torchrun\b", "starts several processes for a search at full budget (minutes)"),
    (r"^bash scripts/(setup|test)\.sh\b|HWNAS_TEST_SEEDS", "sets up the environment or runs the test suite itself"),
    (r"^(git|cmake|bazel|cd|make)\b|\$ANDROID_NDK", "builds a phone runner (Android NDK, network)"),
    (r"^(source|pip|python3\.\d+)\b|-m venv\b|-m pip\b", "changes the Python environment"),
    (r"-m bench\b|-m bench\.|(?<![\w-])bench/", "a benchmark: minutes to hours"),
    (r"-m search\.sweep\b|^hwnas sweep\b", "several searches and trainings (hours)"),
    (r"\$\{?[A-Za-z_]\w*", "uses a shell variable that an earlier line sets"),
    (r"android_harness (devices|doctor)\b|^hwnas (devices|doctor)\b", "talks to the adb server and the phones attached"),
    (r"(-m lut|^hwnas lut) validate\b|-m profiler\.validate\b|^hwnas validate\b", "times whole networks end to end (minutes)"),
    (r"-m profiler\.run\b|^hwnas profile\b", "exports and times every op or arch asked for (minutes)"),
    (r"-m profiler\.deploy\b.*\b(export|measure)\b", "exports and times a full-size network (minutes)"),
    (rf"{TRAIN}.*--(export|measure)\b", "exports and times a full-size network (minutes)"),
    (rf"{TRAIN}.*--scale lut\b", "trains at the LUT's full resolution (hours on a CPU)"),
    (r"\b(imagenet|imagenet100)\b|:DIR\b|\bDIR\b|\bFILE\b|\bPATH\b|/path/to/", "needs a data set, folder or file of your own"),
]
# any all-caps word left after FILL is a placeholder for the reader to fill in
PLACEHOLDER = re.compile(r"(?<![\w$-])[A-Z](?:[A-Z0-9_]*[A-Z0-9])?(?![\w=])")
ENV_ASSIGN = re.compile(r"^(\w+=\S*\s+)+")

# appended to commands that run at full budget otherwise
TINY: list[tuple[str, list[str]]] = [
    (rf"{SEARCH}|{TRAIN}", ["--torch-threads", "1"]),
    (SEARCH, ["--epochs", "1", "--train-epochs", "0", "--subset", "64"]),
    (r"(-m search\.crossdevice|^hwnas crossdevice)\b", ["--no-measure"]),
    (rf"{SEARCH}.*--strategy (evolution|random)\b",
     ["--cycles", "2", "--population", "2", "--tournament", "1", "--fitness-epochs", "1"]),
    (TRAIN, ["--epochs", "1", "--subset", "64"]),
]
SLOW = re.compile(rf"{SEARCH}|{TRAIN}|-m lut plot\b|^hwnas lut plot\b")


@dataclass(frozen=True)
class Command:
    doc: str  # path relative to the repository
    line: int
    text: str  # as shown, continuation lines joined, comment dropped

    @property
    def filled(self) -> str:
        s = self.text
        for word, value in FILL.items():
            s = re.sub(rf"(?<![\w-]){word}(?![\w-])", value, s)
        return s


def doc_files() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def _strip_comment(line: str) -> str:
    """The line without a trailing `# comment` (a `#` outside quotes, after a space)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def extract(path: Path) -> list[list[Command]]:
    """The shell blocks of a Markdown file, each a list of commands."""
    rel = str(path.relative_to(REPO))
    blocks: list[list[Command]] = []
    lines = path.read_text().splitlines()
    fence = None
    current: list[Command] = []
    pending, start = "", 0
    for n, raw in enumerate(lines, 1):
        stripped = raw.strip()
        if fence is None:
            m = re.match(r"^(```+|~~~+)\s*(\w*)", stripped)
            if m:
                fence = (m.group(1), m.group(2).lower())
                current, pending = [], ""
            continue
        if stripped.startswith(fence[0]):
            if fence[1] in ("bash", "sh", "shell", "console") and current:
                blocks.append(current)
            fence = None
            continue
        if fence[1] not in ("bash", "sh", "shell", "console"):
            continue
        text = stripped.removeprefix("$ ")
        if not pending:
            start = n
        if text.endswith("\\"):
            pending += text[:-1].rstrip() + " "
            continue
        full = _strip_comment(pending + text)
        pending = ""
        if full:
            current.append(Command(rel, start, full))
    return blocks


def _hwnas_script() -> str | None:
    """The `hwnas` console script, or `python -m hwnas` where the package has it but this
    environment has not installed the script."""
    found = Path(sys.executable).with_name("hwnas")
    if found.exists() or shutil.which("hwnas"):
        return str(found) if found.exists() else shutil.which("hwnas")
    return "python -m hwnas" if (REPO / "hwnas" / "__main__.py").exists() else None


def verdict(cmd: Command) -> str | None:
    """None when the command runs here, else the reason it is skipped."""
    s = cmd.filled
    body = ENV_ASSIGN.sub("", s)
    words = shlex.split(body, posix=True) if body else []
    if "--help" in words or "-h" in words:
        return None if not body.startswith("hwnas") or _hwnas_script() else "the hwnas console script is not installed"
    for pattern, reason in SKIP:
        if re.search(pattern, s):
            return reason
    if body.startswith("hwnas") and not _hwnas_script():
        return "the hwnas console script is not installed"
    if not re.match(r"^(python|hwnas)\b", body):
        return "not an hwnas command"
    left = PLACEHOLDER.findall(body)
    if left:
        return f"has a placeholder to fill in ({', '.join(sorted(set(left)))})"
    return None


def runnable(cmd: Command) -> str:
    """The command line that is run: FILL applied, TINY appended."""
    s = cmd.filled
    extra: list[str] = []
    for pattern, flags in TINY:
        if re.search(pattern, s):
            extra += flags
    if extra:
        head, sep, tail = s.partition(" -- ")  # options after `--` belong to another parser
        s = head + " " + shlex.join(extra) + (sep + tail if sep else "")
    return s


def all_blocks() -> list[list[Command]]:
    return [b for path in doc_files() for b in extract(path)]


def _block_params():
    params = []
    for block in all_blocks():
        run = [c for c in block if verdict(c) is None]
        marks = [pytest.mark.slow] if any(SLOW.search(c.filled) for c in run) else []
        params.append(pytest.param(block, id=f"{Path(block[0].doc).name}:{block[0].line}", marks=marks))
    return params


# --- the scratch LUT store ---------------------------------------------------------------------

def _write_store(root: Path, write_lut, latency_us) -> None:
    from search.space import load_arch

    luts = root / "luts"
    for runtime, speed in (("executorch", 1e4), ("tflite", 1.3e4)):
        write_lut(luts, "fbnet", lambda op, s=speed: latency_us(op, macs_per_us=s), device_id=DOC_DEVICE,
                  runtime=runtime, overhead_us=3.0)  # fmt: skip
    ref = REPO / "tests" / "data" / "reference" / "hwnasbench"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for name in ("pixel3", "raspi4"):
        subprocess.run([sys.executable, "-m", "lut", "import", str(ref / f"hwnasbench_fbnet_lut_{name}.csv"),
                        "--format", "hwnasbench"], cwd=root, env=env, check=True, capture_output=True)  # fmt: skip
    (root / "runs" / "x").mkdir(parents=True)
    (root / "runs" / "x" / "arch.json").write_text(load_arch("fbnet_c").to_json(indent=2))
    (root / "tests").symlink_to(REPO / "tests")


@pytest.fixture(scope="session")
def docs_store(tmp_path_factory: pytest.TempPathFactory, write_synthetic_lut, macs_latency_us) -> Path:
    root = tmp_path_factory.mktemp("docs-store")
    _write_store(root, write_synthetic_lut, macs_latency_us)
    return root


def _env(bin_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["PATH"] = os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), env.get("PATH", "")])
    env["MPLBACKEND"] = "Agg"
    env["OMP_NUM_THREADS"] = "1"  # one thread per command: no spin-waiting against the other tests' workers
    return env


@pytest.mark.parametrize("block", _block_params())
def test_doc_commands_run(block: list[Command], docs_store: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    shutil.copytree(docs_store, work, symlinks=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "python"  # this interpreter (a symlink would leave its virtual environment)
    wrapper.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
    wrapper.chmod(0o755)
    if _hwnas_script() == "python -m hwnas":
        (bin_dir / "hwnas").write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m hwnas "$@"\n')
        (bin_dir / "hwnas").chmod(0o755)
    env = _env(bin_dir)
    ran, skipped = [], []
    for cmd in block:
        why = verdict(cmd)
        if why:
            skipped.append(f"{cmd.doc}:{cmd.line}: {cmd.text}  [{why}]")
            continue
        line = runnable(cmd)
        proc = subprocess.run(["bash", "-o", "pipefail", "-c", line], cwd=work, env=env, capture_output=True, check=False,
                              text=True, timeout=900)  # fmt: skip
        out = (proc.stdout + proc.stderr)[-3000:]
        assert proc.returncode == 0, f"{cmd.doc}:{cmd.line}: `{cmd.text}` (run as `{line}`) exited {proc.returncode}:\n{out}"
        ran.append(cmd)
    for s in skipped:
        print("skipped", s)
    if not ran:
        pytest.skip("; ".join(sorted({s.rsplit("[", 1)[1].rstrip("]") for s in skipped})))


# --- what the pages must be -------------------------------------------------------------------

def test_readme_is_a_first_page() -> None:
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    commands = [c.text for b in extract(REPO / "README.md") for c in b]
    assert "bash scripts/setup.sh" in commands and "bash scripts/test.sh" in commands
    assert commands.index("bash scripts/setup.sh") < commands.index("bash scripts/test.sh")


def _slug(heading: str) -> str:
    s = heading.strip().lower().replace("`", "")
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


def test_links_between_pages_resolve() -> None:
    """Every relative link of README.md, CONTRIBUTING.md and docs/*.md names a file that exists,
    and a `#anchor` names a heading of that file."""
    pages = [*doc_files(), REPO / "CONTRIBUTING.md"]
    bad = []
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"^[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                bad.append(f"{page.relative_to(REPO)}: {target} (no such file)")
                continue
            if anchor and dest.suffix == ".md":
                slugs = {_slug(m) for m in re.findall(r"^#+\s+(.*)$", dest.read_text(), re.MULTILINE)}
                if anchor not in slugs:
                    bad.append(f"{page.relative_to(REPO)}: {target} (no such heading)")
    assert not bad, "\n".join(bad)


def test_extraction_and_rules() -> None:
    """The extractor joins continuation lines and drops comments; the rules skip what they say."""
    blocks = extract(REPO / "README.md")
    texts = [c.text for b in blocks for c in b]
    assert any(t.startswith("python -m profiler.run --device SERIAL --runtime tflite --preflight --runner") for t in texts)
    assert not any("#" in t.split("--")[0] for t in texts if t.startswith("python -m lut list"))
    c = Command("x.md", 1, "python -m lut show DEVICE_ID/fbnet/executorch-t1")
    assert c.filled == f"python -m lut show {DOC_DEVICE}/fbnet/executorch-t1" and verdict(c) is None
    assert verdict(Command("x.md", 1, "python -m android_harness doctor --device SERIAL")) == SKIP[0][1]
    assert verdict(Command("x.md", 1, "python -m profiler.run --help")) is None
    assert "placeholder" in verdict(Command("x.md", 1, "python -m lut compare A B"))
    run = runnable(Command("x.md", 1, "python -m search.train --arch a.json -- --rounds 2"))
    assert run == "python -m search.train --arch a.json --torch-threads 1 --epochs 1 --subset 64 -- --rounds 2"


if __name__ == "__main__":
    for blk in all_blocks():
        for c in blk:
            why = verdict(c)
            print(f"{c.doc}:{c.line}\t{'run' if why is None else 'skip: ' + why}\t{c.text}")
