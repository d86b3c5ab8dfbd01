#!/usr/bin/env bash
# Quick start, command 2: the whole test suite (slow tests included), in the project's .venv,
# one pytest-xdist worker per core (pass -n 0 to run in one process).
source "$(dirname "$0")/env.sh"
exec .venv/bin/python -m pytest -n auto --dist worksteal "$@"
