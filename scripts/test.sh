#!/usr/bin/env bash
# Quick start, command 2: the whole test suite (slow tests included), in the project's .venv.
source "$(dirname "$0")/env.sh"
exec .venv/bin/python -m pytest "$@"
