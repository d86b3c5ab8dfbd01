# Sourced by setup.sh and test.sh: make ./.venv with every pinned dependency, and the adb server.
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

# HWNAS_TORCH picks the torch build: cpu (the default) or cuda (PyPI's default Linux wheel, built
# for CUDA 12, with its nvidia-* libraries, about 3 GB more).
TORCH_BUILD=${HWNAS_TORCH:-cpu}
case "$TORCH_BUILD" in
    cpu|cuda) ;;
    *) echo "HWNAS_TORCH must be cpu (default) or cuda, not '$TORCH_BUILD'" >&2; exit 2 ;;
esac

[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.hwnas-installed
want=$( (cat pyproject.toml requirements.lock; echo "torch=$TORCH_BUILD") | sha256sum | cut -d' ' -f1)
# exit 0 when the installed torch is the build asked for
torch_is() {
    .venv/bin/python - "$1" <<'PY' 2>/dev/null
import sys, torch
cuda = torch.version.cuda is not None and "+cpu" not in torch.__version__
sys.exit(0 if cuda == (sys.argv[1] == "cuda") else 1)
PY
}
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "== installing Python dependencies into .venv (torch: $TORCH_BUILD build)"
    .venv/bin/python -m pip install -q --upgrade pip
    # The same torch version either way; a build of the other kind is removed first, since pip
    # counts 2.13.0+cpu and 2.13.0 as the same release and would keep it.
    if .venv/bin/python -c 'import torch' 2>/dev/null && ! torch_is "$TORCH_BUILD"; then
        .venv/bin/python -m pip uninstall -q -y torch
    fi
    if [ "$TORCH_BUILD" = cuda ]; then
        # PyPI's Linux wheel is the CUDA build. pip's configuration (whose find-links or extra
        # indexes may hold a +cpu wheel, which outranks it) is left out of this one install;
        # HWNAS_TORCH_INDEX names another index (e.g. https://download.pytorch.org/whl/cu126).
        PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS="" PIP_EXTRA_INDEX_URL="" \
            .venv/bin/python -m pip install -q torch==2.13.0 \
            --index-url "${HWNAS_TORCH_INDEX:-https://pypi.org/simple}"
    # The CPU build. A plain `pip install torch` would pull the multi-GB CUDA build, so: a local
    # CPU wheel when pip's find-links has one (its dependencies then come from PyPI), else
    # PyTorch's CPU index beside pip's own (its `2.13.0+cpu` outranks the plain `2.13.0`).
    elif .venv/bin/python -m pip install -q --no-index --no-deps torch==2.13.0 2>/dev/null; then
        .venv/bin/python -m pip install -q torch==2.13.0
    else
        .venv/bin/python -m pip install -q torch==2.13.0 --extra-index-url https://download.pytorch.org/whl/cpu
    fi
    torch_is "$TORCH_BUILD" || {
        echo "torch is not the $TORCH_BUILD build: remove .venv and check pip's indexes (HWNAS_TORCH=$TORCH_BUILD)" >&2
        exit 1
    }
    # the lock pins the CPU build; a CUDA venv takes every other pin from it
    constraints=requirements.lock
    if [ "$TORCH_BUILD" = cuda ]; then
        constraints=.venv/constraints-cuda.txt
        grep -v '^torch==' requirements.lock > "$constraints"
    fi
    .venv/bin/python -m pip install -q -c "$constraints" -e '.[test]'
    echo "$want" > "$stamp"
fi
