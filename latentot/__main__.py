"""``python -m latentot``: the same command line as the ``latentot`` console script."""

import sys

from latentot.cli import main

if __name__ == "__main__":
    sys.exit(main())
