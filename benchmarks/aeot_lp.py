"""Benchmark of the AE-OT batch LP: latentot.aeot.solve_batch against exact CPU solvers.

For each m (batch size) and d (latent dimension) it times, in one run and on the same problem
(noise x ~ N(0, I), codes y from an 8-cluster mixture, cost ½‖x - y‖²):

* ``solve_batch`` (ott Sinkhorn + c-transform repair + warm-started Hungarian), jit warmed up,
  ``block_until_ready``, median over ``--repeats``;
* scipy's ``linear_sum_assignment`` on the float64 cost matrix (cost construction included);
* POT's exact network simplex ``ot.emd`` when POT is installed (cost construction included).

It prints the times, the ratios exact/ours (> 1: ours is faster), the certified relative dual gap
(cost - dual) / cost of ``solve_batch`` and the relative excess of its assignment cost over
scipy's optimum (0 up to float32 rounding). The goal: faster than an exact CPU
solver at m >= 1024 and d >= 16.

Usage::

    python benchmarks/aeot_lp.py            # m in {256, 1024, 4096}, d in {2, 16, 100}
    python benchmarks/aeot_lp.py --quick    # m in {256, 1024}, d in {2, 16}, one repeat
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import jax
import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

from latentot.aeot import solve_batch

try:
    import ot  # POT
except ImportError:  # pragma: no cover - optional
    ot = None


def make_problem(m: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noise [m, d] ~ N(0, I) and codes [m, d] from 8 unit clusters at radius 3 (float32)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((m, d))
    centres = 3.0 * rng.standard_normal((8, d)) / np.sqrt(max(d, 1) / 2)
    y = centres[rng.integers(0, 8, size=m)] + rng.standard_normal((m, d))
    return x.astype(np.float32), y.astype(np.float32)


def _median_time(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def bench_one(m: int, d: int, *, repeats: int, pot: bool, seed: int = 0) -> dict:
    """Times the three solvers on one problem; returns a row of the table."""
    x, y = make_problem(m, d, seed)
    xj, yj = jax.device_put(x), jax.device_put(y)

    def ours():
        return jax.block_until_ready(solve_batch(xj, yj))

    ours()  # compile
    t_ours, lp = _median_time(ours, repeats)

    x64, y64 = x.astype(np.float64), y.astype(np.float64)

    def scipy_lsa():
        c = 0.5 * cdist(x64, y64, "sqeuclidean")
        rows, cols = linear_sum_assignment(c)
        return c[rows, cols].mean()

    t_lsa, optimum = _median_time(scipy_lsa, repeats)

    t_emd = float("nan")
    if pot and ot is not None:
        uniform = np.full(m, 1.0 / m)

        def pot_emd():
            c = 0.5 * cdist(x64, y64, "sqeuclidean")
            return ot.emd(uniform, uniform, c, numItermax=10_000_000)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t_emd, _ = _median_time(pot_emd, repeats)

    c = 0.5 * cdist(x64, y64, "sqeuclidean")
    ours_cost = c[np.arange(m), np.asarray(lp.assignment)].mean()
    return {
        "m": m,
        "d": d,
        "ours": t_ours,
        "lsa": t_lsa,
        "emd": t_emd,
        "gap": float(lp.dual_gap) / float(lp.cost),
        "excess": (ours_cost - optimum) / optimum,
        "iters": int(lp.iterations),
        "converged": bool(lp.converged),
    }


def main(argv: list[str] | None = None) -> None:
    """Parses the arguments, runs the grid and prints the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small grid, one repeat")
    parser.add_argument("--m", type=int, nargs="+", help="batch sizes (default 256 1024 4096)")
    parser.add_argument("--d", type=int, nargs="+", help="dimensions (default 2 16 100)")
    parser.add_argument("--repeats", type=int, help="timed repeats per solver (default 3)")
    parser.add_argument("--no-pot", action="store_true", help="skip POT's ot.emd")
    args = parser.parse_args(argv)

    ms = args.m or ([256, 1024] if args.quick else [256, 1024, 4096])
    ds = args.d or ([2, 16] if args.quick else [2, 16, 100])
    repeats = args.repeats or (1 if args.quick else 3)
    pot = not args.no_pot and ot is not None

    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, repeats={repeats}")
    header = (
        f"{'m':>5} {'d':>4} {'ours [s]':>9} {'lsa [s]':>9} {'emd [s]':>9} "
        f"{'lsa/ours':>9} {'emd/ours':>9} {'dual gap':>9} {'excess':>9} {'iters':>6} conv"
    )
    print(header)
    print("-" * len(header))
    for m in ms:
        for d in ds:
            r = bench_one(m, d, repeats=repeats, pot=pot)
            print(
                f"{r['m']:>5} {r['d']:>4} {r['ours']:>9.4f} {r['lsa']:>9.4f} {r['emd']:>9.4f} "
                f"{r['lsa'] / r['ours']:>9.2f} {r['emd'] / r['ours']:>9.2f} {r['gap']:>9.1e} "
                f"{r['excess']:>9.1e} {r['iters']:>6} {'yes' if r['converged'] else 'NO'}",
                flush=True,
            )
    print(
        "dual gap: (cost - dual) / cost of solve_batch, a certificate (the potentials are "
        "feasible); excess: its assignment cost over scipy's optimum, relative."
    )


if __name__ == "__main__":
    main()
