#!/usr/bin/env bash
# Quick start, command 2: what a reviewer checks, in the project's .venv: the linter (ruff), the
# layering check (imports run one way, no import circles), then the whole test suite (slow tests
# included), one pytest-xdist worker per core. Arguments go to pytest:
#
#   bash scripts/test.sh                      everything (what CI runs)
#   bash scripts/test.sh -m "not slow"        the quick lane while developing
#   bash scripts/test.sh -m "not adb"         without the tests that need the adb server
#   bash scripts/test.sh -n 0 tests/test_space.py    one file, in one process
source "$(dirname "$0")/env.sh"
echo "== ruff"
.venv/bin/python -m ruff check .
echo "== layering"
.venv/bin/python scripts/check_layering.py .
echo "== pytest"
exec .venv/bin/python -m pytest -n auto --dist worksteal "$@"
