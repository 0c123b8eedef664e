"""Benchmark of the AE-OT inverse and of matched paths through a sampler, as ratios in one run.

1. ``Sampler.inverse_transport`` on training codes against the forward map ``transport`` on
   as many noise rows: codes per second of each and their ratio, warm (median of repeats) and the
   first call (compilation and the sampler's anchor table included), with the fraction of codes
   whose round trip converged.
2. 64 matched paths × 9 frames (``matched_lerp`` between pairs of codes, t = 0, 1/8, …, 1)
   through the sampler against the same paths under the Gaussian prior, first call and warm:
   jitted with the sampler closed over (its anchor table cached on the host and a constant of
   the program), jitted with the sampler as an argument (a traced sampler: the table is
   computed inside every call), and eager (against the eager Gaussian paths).
3. The first calls of both through a second sampler of the same structure (the first one's
   parameters scaled by 1.001): the compiled programs are cached per structure and shape, so
   only the anchor table is new (the jitted paths with the sampler closed over compile anew:
   that program is the caller's).

The samplers are short default fits (``aeot.fit``, ``--steps``) on the "clusters" pair of
:mod:`latentot.aeot.known_maps` at each dimension: the timing needs a trained map, not a good
one. Run from the repository root: ``python benchmarks/inverse.py [--dims 8 32]``.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import statistics
import time

import jax
import numpy as np

import latentot as lt
from latentot import aeot
from latentot.aeot.known_maps import known_map


def _timed(fn, *args):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - t0


def _first_and_warm(fn, *args, repeats: int):
    first = _timed(fn, *args)
    return first, statistics.median(_timed(fn, *args) for _ in range(repeats))


def _sampler(dim: int, n: int, steps: int):
    pair = known_map(jax.random.key(0), "clusters", dim)
    _, codes = pair.sample(jax.random.key(1), n)
    t0 = time.perf_counter()
    sampler = aeot.fit(jax.random.key(0), codes, steps=steps)
    return sampler, codes, time.perf_counter() - t0


def inverse_row(sampler, codes, rows: int, repeats: int) -> dict:
    """Codes per second of the inverse and of the forward map on ``rows`` rows."""
    y = codes[:rows]
    z = sampler.prior.sample(jax.random.key(3), y.shape)
    f_first, f_warm = _first_and_warm(sampler.transport, z, repeats=repeats)
    i_first, i_warm = _first_and_warm(sampler.inverse_transport, y, repeats=repeats)
    _, info = sampler.inverse_transport(y, return_info=True)
    return {
        "forward/s": rows / f_warm,
        "inverse/s": rows / i_warm,
        "ratio": f_warm / i_warm,
        "inverse first (s)": i_first,
        "forward first (s)": f_first,
        "converged": float(np.mean(np.asarray(info.converged))),
    }


def _same_structure(sampler):
    """A sampler of the same structure as ``sampler``, with other parameter values."""
    return aeot.Sampler(
        jax.tree_util.tree_map(lambda v: 1.001 * v, sampler.params),
        sampler.prior,
        sampler.potential_config,
        graphdef=sampler.graphdef,
        dim=sampler._dim,
        frame=sampler.frame,
        bounds=sampler.bounds,
    )


def reuse_row(sampler, codes, rows: int, pairs: int, frames: int) -> dict:
    """First calls through a second sampler of the same structure (after the first's)."""
    other = _same_structure(sampler)
    a, b = codes[:pairs], codes[pairs : 2 * pairs]
    return {
        "inverse first (s)": _timed(other.inverse_transport, codes[:rows]),
        "paths, argument, first (s)": _timed(_PATHS_ARGUMENT[frames], other, a, b),
    }


#: The jitted paths with the sampler as an argument, one jit per frame count (shared by the
#: samplers, as a user's jitted function would be).
_PATHS_ARGUMENT: dict = {}


def paths_row(sampler, codes, pairs: int, frames: int, repeats: int) -> dict:
    """``pairs`` matched paths of ``frames`` frames through the sampler and under the prior."""
    a, b = codes[:pairs], codes[pairs : 2 * pairs]
    t = np.linspace(0.0, 1.0, frames)[:, None]  # concrete: one map per frame

    def paths(prior, a, b):
        return lt.matched_lerp(prior, a, b, t)

    gauss = functools.partial(paths, lt.Gaussian())
    _, g_warm = _first_and_warm(jax.jit(gauss), a, b, repeats=repeats)
    _, ge_warm = _first_and_warm(gauss, a, b, repeats=repeats)
    row = {"gaussian jit (ms)": 1e3 * g_warm, "gaussian eager (ms)": 1e3 * ge_warm}
    argument = _PATHS_ARGUMENT.setdefault(frames, jax.jit(paths))
    variants = {
        "jit, sampler closed over": (jax.jit(functools.partial(paths, sampler)), g_warm),
        "jit, sampler an argument": (functools.partial(argument, sampler), g_warm),
        "eager": (functools.partial(paths, sampler), ge_warm),
    }
    for name, (fn, reference) in variants.items():
        first, warm = _first_and_warm(fn, a, b, repeats=repeats)
        row[name] = (1e3 * warm, warm / reference, first)
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--codes", type=int, default=4000, help="training codes of each fit")
    parser.add_argument("--steps", type=int, default=100, help="fit steps")
    parser.add_argument("--rows", type=int, default=1000, help="codes inverted")
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--frames", type=int, default=9)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    device = jax.devices()[0]
    print(
        f"{stamp} · {platform.processor() or platform.machine()} · {os.cpu_count()} CPUs · "
        f"jax {jax.__version__} on {device.platform} ({device.device_kind})"
    )
    for dim in args.dims:
        sampler, codes, fit_s = _sampler(dim, args.codes, args.steps)
        kind = "plain" if sampler.frame is None else f"frame k={sampler.k}"
        print(f"\n== d = {dim} ({kind}; fit {args.steps} steps in {fit_s:.0f} s) ==")
        inv = inverse_row(sampler, codes, args.rows, args.repeats)
        print(
            f"inverse of {args.rows} codes: {inv['inverse/s']:.0f} codes/s warm "
            f"(forward {inv['forward/s']:.0f}/s; ratio {inv['ratio']:.4f}); first call "
            f"{inv['inverse first (s)']:.1f} s; converged {inv['converged']:.3f}"
        )
        p = paths_row(sampler, codes, args.pairs, args.frames, args.repeats)
        print(
            f"{args.pairs} paths × {args.frames} frames under the Gaussian prior: jit "
            f"{p.pop('gaussian jit (ms)'):.2f} ms, eager {p.pop('gaussian eager (ms)'):.2f} ms"
        )
        for name, (ms, ratio, first) in p.items():
            print(
                f"  through the sampler, {name}: {ms:.0f} ms warm ({ratio:.0f}× the Gaussian "
                f"paths, {'eager' if name == 'eager' else 'jit'}), first call {first:.1f} s"
            )
        r = reuse_row(sampler, codes, args.rows, args.pairs, args.frames)
        print(
            f"a second sampler of the same structure, first calls: inverse "
            f"{r['inverse first (s)']:.2f} s; jitted paths with the sampler an argument "
            f"{r['paths, argument, first (s)']:.2f} s"
        )


if __name__ == "__main__":
    main()
