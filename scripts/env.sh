# Sourced by setup.sh and test.sh: make ./.venv with every pinned dependency (requirements.lock),
# the test tools, and the adb server.
# Idempotent: a second run finds the stamp of the same pyproject.toml + requirements.lock and
# installs nothing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Python 3.11, 3.12 or 3.13 (pyproject.toml's requires-python): $PYTHON, else the first of these found.
if [ -z "${PYTHON:-}" ]; then
    for PY in python3.11 python3.12 python3.13 python3; do command -v "$PY" >/dev/null 2>&1 && break; done
else
    PY=$PYTHON
fi
if ! "$PY" -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 13))' 2>/dev/null; then
    echo "hwnas needs Python 3.11, 3.12 or 3.13 (found $("$PY" --version 2>&1)); set PYTHON=/path/to/python3.12" >&2
    exit 1
fi

# Debian's adb provides the adb server (phones, and the loopback device the tests use).
if ! command -v adb >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    echo "== installing Debian's adb package"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq adb >/dev/null
fi

[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.hwnas-installed
want=$(cat pyproject.toml requirements.lock | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "== installing Python dependencies into .venv"
    .venv/bin/python -m pip install -q --upgrade pip
    # The CPU build of torch. A plain `pip install torch` would pull a multi-GB CUDA build, so:
    # a local CPU wheel when pip's find-links has one (its dependencies then come from PyPI),
    # else PyTorch's CPU index beside pip's own (its `2.13.0+cpu` outranks the plain `2.13.0`).
    if .venv/bin/python -m pip install -q --no-index --no-deps torch==2.13.0 2>/dev/null; then
        .venv/bin/python -m pip install -q torch==2.13.0
    else
        .venv/bin/python -m pip install -q torch==2.13.0 --extra-index-url https://download.pytorch.org/whl/cpu
    fi
    .venv/bin/python -c 'import torch, sys; sys.exit("+cpu" not in torch.__version__ and torch.version.cuda is not None)' \
        || { echo "torch is not the CPU build: remove .venv and check pip's indexes" >&2; exit 1; }
    .venv/bin/python -m pip install -q -c requirements.lock -e '.[test]'
    echo "$want" > "$stamp"
fi
