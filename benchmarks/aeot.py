"""AE-OT benchmarks from one run: the batch LP, then the training step.

1. ``aeot_lp``: :func:`latentot.aeot.solve_batch` for m in {256, 1024, 4096} and d in
   {2, 16, 100}, next to scipy ``linear_sum_assignment`` (and POT's ``emd`` when installed),
   with the certified dual gap. Goal: faster than an exact CPU solver at m >= 1024, d >= 16.
2. ``aeot_train``: time per training step (LP + regression) against a reference loop that solves
   the LP on the host with scipy and steps the same jitted regression. Goal: >= 2x faster.

Run from the repository root: ``python benchmarks/aeot.py [--quick]``.
"""

from __future__ import annotations

import argparse
import pathlib
import platform
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import aeot_lp
import aeot_train


def main(argv: list[str] | None = None) -> None:
    """Runs both benchmarks with one ``--quick`` switch."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small grids for a smoke test")
    args = parser.parse_args(argv)
    quick = ["--quick"] if args.quick else []
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"{stamp} · {platform.processor() or platform.machine()}")
    print("\n== 1. batch LP ==")
    aeot_lp.main(quick)
    print("\n== 2. training step ==")
    aeot_train.main(quick)


if __name__ == "__main__":
    main()
