"""`python -m hwnas`: the `hwnas` command."""

import sys

from hwnas.cli import console

if __name__ == "__main__":
    sys.exit(console())
