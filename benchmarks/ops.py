"""Benchmark of the matched latent operations.

Two measurements, both in one run:

1. ``matched_lerp`` against plain ``lerp`` on a [rows, dim] float32 array (default [10⁶, 100],
   processed in chunks), jitted, for each prior and for the numerical map; and ndtr → ndtri
   (a CDF → inverse-CDF map) for context. ``t`` is a traced argument, so the transport map is
   built inside every call (once per chunk), as a user calling ``matched_lerp`` pays for it.
   Targets: ≤ 1.2× lerp for Gaussian and Cauchy, ≤ 1.5× uniform, ≤ 5× Laplace, logistic and the
   numerical path.
2. Every matched op against a NumPy/SciPy reference computing the same thing on the same data
   (``scipy.stats`` cdf/ppf of the closed-form law of y, or of a numerically tabulated F_Y for
   priors without one). Target: ≥ 20× faster.

3. Grids and keyframe paths at d = 512: a jitted 7 × 7 ``matched_grid`` and a
   120-frame looping ``matched_spline`` through 8 keyframes, per prior, as a ratio to the
   Gaussian's (closed-form) time; the path both with t closed over as a NumPy array (one map
   per distinct weight vector) and with t a traced argument (one map per frame, with
   ``method="fft"``: for a traced batch ``auto`` picks the shardable quadrature map). The
   numerical light-tailed priors use the FFT-lattice map; ``--old`` also times the quadrature
   map (the previous default) on the same calls. Target: within 10× of the Gaussian.
4. Grids and keyframe paths as the README uses them (d = 100, a 5 × 5 grid, a 120-frame loop
   with a NumPy t, and the same loop with t a jit argument), per prior, eager and jitted, first
   and later calls, as a ratio to the same call under the Gaussian prior (``--grids-only``
   runs this part alone; :func:`bench_grids_paths`). Target: within 10× of the Gaussian.

Each timing is the median of ``--repeats`` runs after a warm-up run, with ``block_until_ready``.

Usage::

    python benchmarks/ops.py            # full size
    python benchmarks/ops.py --quick    # small arrays, fewer repeats (a smoke test)
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats
from jax.scipy import special

import latentot as lt
from latentot import ops

PRIORS = {
    "gaussian": (lt.Gaussian(), {}),
    "cauchy": (lt.Cauchy(), {}),
    "uniform": (lt.Uniform(), {}),
    "laplace": (lt.Laplace(), {}),
    "logistic": (lt.Logistic(), {}),
    "gaussian-numerical": (lt.Gaussian(), {"method": "numerical"}),
}
TARGETS = {
    "gaussian": 1.2,
    "cauchy": 1.2,
    "uniform": 1.5,
    "laplace": 5.0,
    "logistic": 5.0,
    "gaussian-numerical": 5.0,
}
SCIPY = {
    "gaussian": scipy.stats.norm,
    "cauchy": scipy.stats.cauchy,
    "uniform": scipy.stats.uniform(loc=-1, scale=2),
    "laplace": scipy.stats.laplace,
    "logistic": scipy.stats.logistic,
}


def _median_time(fn, repeats: int) -> float:
    jax.block_until_ready(fn())  # warm-up (compilation)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _chunked(fn, args, n_chunks):
    def run():
        out = None
        for _ in range(n_chunks):
            out = fn(*args)
            out.block_until_ready()
        return out

    return run


# --------------------------------------------------------------------------------------------
# 1. matched_lerp vs lerp.


def bench_lerp(rows: int, dim: int, chunk: int, repeats: int, t: float = 0.3) -> dict:
    chunk = min(chunk, rows)
    n_chunks = math.ceil(rows / chunk)
    tt = jnp.float32(t)
    results = {}
    base = None
    for name, (prior, kw) in PRIORS.items():
        z = prior.sample(jax.random.key(0), (2, chunk, dim), jnp.float32)
        z0, z1 = z[0], z[1]
        if base is None:
            lerp = jax.jit(lt.lerp)
            base = _median_time(_chunked(lerp, (z0, z1, tt), n_chunks), repeats)
            ndtr_ndtri = jax.jit(lambda a, b, s: special.ndtri(special.ndtr(lt.lerp(a, b, s))))
            ref = _median_time(_chunked(ndtr_ndtri, (z0, z1, tt), n_chunks), repeats)
            results["lerp"] = {"seconds": base, "ratio": 1.0}
            results["ndtr->ndtri"] = {"seconds": ref, "ratio": ref / base}

        def matched(a, b, s, prior=prior, kw=kw):
            return lt.matched_lerp(prior, a, b, s, **kw)

        sec = _median_time(_chunked(jax.jit(matched), (z0, z1, tt), n_chunks), repeats)
        results[name] = {"seconds": sec, "ratio": sec / base, "target": TARGETS[name]}

        # Where the time goes: building the map (once per call) vs applying it to the chunk.
        def build(s, prior=prior, kw=kw):
            return lt.transport_map(prior, ops.lerp_weights(s), **kw)

        build = jax.jit(build)
        tmap = build(tt)
        apply = jax.jit(lambda T, a, b, s: T(lt.lerp(a, b, s)))
        build_s = _median_time(lambda build=build: build(tt), repeats) * n_chunks
        apply_s = _median_time(_chunked(apply, (tmap, z0, z1, tt), n_chunks), repeats)
        results[name].update(build_seconds=build_s, apply_seconds=apply_s)

    # Measure lerp again at the end and keep the faster run: the machine may be shared.
    again = _median_time(_chunked(jax.jit(lt.lerp), (z0, z1, tt), n_chunks), repeats)
    base = min(base, again)
    results["lerp"] = {"seconds": base, "ratio": 1.0}
    for r in results.values():
        r["ratio"] = r["seconds"] / base
        if "apply_seconds" in r:
            r["apply_ratio"] = r["apply_seconds"] / base
    return results


# --------------------------------------------------------------------------------------------
# 2. Matched ops vs NumPy/SciPy references.


def _gauss_ref(y, norm):
    """Reference Gaussian map: Φ⁻¹(Φ(y; scale = ‖w‖₂))."""
    return scipy.stats.norm.ppf(scipy.stats.norm.cdf(y, scale=norm))


def _tabulated_cdf(dist, w, grid, nodes: int = 4000):
    """F_Y on a grid for Y = w0 Z0 + w1 Z1 by midpoint quadrature over Z1's quantiles."""
    u = (np.arange(nodes) + 0.5) / nodes
    q = dist.ppf(u)
    return dist.cdf((grid[:, None] - w[1] * q[None, :]) / w[0]).mean(axis=1)


def _uniform_pair_cdf(y, t):
    a, b = max(t, 1 - t), min(t, 1 - t)
    return np.where(
        y <= b - a,
        (y + 1) ** 2 / (8 * a * b),
        np.where(y <= a - b, (y + a) / (2 * a), 1 - (1 - y) ** 2 / (8 * a * b)),
    )


def _lerp_reference(name, z0, z1, t):
    y = (1 - t) * z0 + t * z1
    if name == "gaussian":
        return _gauss_ref(y, math.hypot(1 - t, t))
    if name == "cauchy":
        return scipy.stats.cauchy.ppf(scipy.stats.cauchy.cdf(y, scale=1.0))
    if name == "uniform":
        return SCIPY["uniform"].ppf(np.clip(_uniform_pair_cdf(y, t), 0, 1))
    dist = SCIPY[name]
    w = (max(1 - t, t), min(1 - t, t))
    lo, hi = dist.ppf(1e-7), dist.ppf(1 - 1e-7)
    grid = np.linspace(lo, hi, 2049)
    f = _tabulated_cdf(dist, w, grid)
    return dist.ppf(np.interp(y, grid, f))


def bench_references(rows: int, dim: int, repeats: int, ref_repeats: int, t: float = 0.3):
    """Every matched op (Gaussian) and matched lerp (every prior) against NumPy/SciPy."""
    rng = np.random.default_rng(0)
    key = jax.random.key(1)
    g = lt.Gaussian()
    out = {}

    def record(name, jax_fn, jax_args, ref_fn):
        sec = _median_time(lambda: jax_fn(*jax_args), repeats)
        ref = _median_time(ref_fn, ref_repeats)
        out[name] = {"seconds": sec, "reference_seconds": ref, "speedup": ref / sec}

    # matched lerp, every prior.
    for name, (prior, _) in PRIORS.items():
        if name not in SCIPY:
            continue
        z = prior.sample(jax.random.key(2), (2, rows, dim), jnp.float32)
        zn = np.asarray(z)
        fn = jax.jit(lambda a, b, s, prior=prior: lt.matched_lerp(prior, a, b, s))
        record(
            f"lerp/{name}",
            fn,
            (z[0], z[1], jnp.float32(t)),
            lambda zn=zn, name=name: _lerp_reference(name, zn[0], zn[1], t),
        )

    # The other ops, Gaussian prior.
    zs = jax.random.normal(key, (3, rows, dim), jnp.float32)
    zsn = np.asarray(zs)
    w3 = jnp.asarray([0.2, 0.3, 0.5], jnp.float32)
    w3n = np.asarray(w3, np.float64)
    record(
        "combine3/gaussian",
        jax.jit(lambda a, w: lt.matched_combine(g, a, w)),
        (zs, w3),
        lambda: _gauss_ref(np.tensordot(w3n, zsn, axes=1), np.linalg.norm(w3n)),
    )
    record(
        "analogy/gaussian",
        jax.jit(lambda a, b, c: lt.matched_analogy(g, a, b, c)),
        (zs[0], zs[1], zs[2]),
        lambda: _gauss_ref(zsn[2] + zsn[1] - zsn[0], math.sqrt(3)),
    )

    n = math.isqrt(rows)
    corners = zs[0, :4]
    cn = np.asarray(corners, np.float64)
    s = np.linspace(0, 1, n)
    v, u = s[:, None], s[None, :]
    wg = np.stack([(1 - u) * (1 - v), u * (1 - v), (1 - u) * v, u * v], -1)

    def grid_ref():
        y = np.einsum("ijk,kd->ijd", wg, cn)
        return _gauss_ref(y, np.linalg.norm(wg, axis=-1)[..., None])

    record(
        "grid/gaussian",
        jax.jit(lambda c: lt.matched_grid(g, c, n)),
        (corners,),
        grid_ref,
    )

    eps = 0.5
    num = 8
    centres = zs[0, : rows // num]
    cn8 = np.asarray(centres)

    def vicinity_ref():
        y = cn8 + eps * rng.standard_normal((num, *cn8.shape), dtype=np.float32)
        return _gauss_ref(y, math.sqrt(1 + eps * eps))

    record(
        "vicinity/gaussian",
        jax.jit(lambda k, z: lt.matched_vicinity(k, g, z, eps, num)),
        (key, centres),
        vicinity_ref,
    )

    # The same op given the draws u: the map's share (JAX's threefry RNG dominates the above).
    u8 = jax.random.normal(key, (num, *centres.shape), jnp.float32)
    u8n = np.asarray(u8)
    tv = lt.transport_map(g, ops.vicinity_weights(jnp.float32(eps)))
    record(
        "vicinity/gaussian (given u)",
        jax.jit(lambda T, z, u: T(z + eps * u)),
        (tv, centres, u8),
        lambda: _gauss_ref(cn8 + eps * u8n, math.sqrt(1 + eps * eps)),
    )

    steps = 10
    starts = zs[0, : rows // steps]
    sn = np.asarray(starts)

    def walk_ref():
        ys = [sn]
        y = sn
        for _ in range(steps):
            y = _gauss_ref(
                y + eps * rng.standard_normal(sn.shape, dtype=np.float32), math.sqrt(1 + eps * eps)
            )
            ys.append(y)
        return np.stack(ys)

    us = jax.random.normal(key, (steps, *starts.shape), jnp.float32)
    usn = np.asarray(us)

    def walk_given_u(T, z, u):
        def step(y, u_k):
            y = T(y + eps * u_k)
            return y, y

        return jnp.concatenate([z[None], jax.lax.scan(step, z, u)[1]])

    def walk_given_u_ref():
        ys = [sn]
        for k in range(steps):
            ys.append(_gauss_ref(ys[-1] + eps * usn[k], math.sqrt(1 + eps * eps)))
        return np.stack(ys)

    record(
        "random_walk/gaussian (given u)",
        jax.jit(walk_given_u),
        (tv, starts, us),
        walk_given_u_ref,
    )
    record(
        "random_walk/gaussian",
        jax.jit(lambda k, z: lt.matched_random_walk(k, g, z, eps, steps)),
        (key, starts),
        walk_ref,
    )
    return out


# --------------------------------------------------------------------------------------------
# 3. Grids and paths at d = 512.


def _user_priors():
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
    from tests.references import Gumbel, StudentT2

    return {"user Gumbel": Gumbel(), "user Student-t(2)": StudentT2()}


def bench_paths(repeats: int, old: bool, dim: int = 512) -> dict:
    """Jitted 7 × 7 matched_grid and 120-frame matched_spline (8 keyframes) per prior."""
    priors = {
        "gaussian": lt.Gaussian(),
        "uniform": lt.Uniform(),
        "laplace": lt.Laplace(),
        "logistic": lt.Logistic(),
        **_user_priors(),
    }
    t = np.arange(120) * 8 / 120  # a loop, 15 frames per segment
    out = {}
    for name, prior in priors.items():
        corners = prior.sample(jax.random.key(0), (4, dim), jnp.float32)
        keys = prior.sample(jax.random.key(1), (8, dim), jnp.float32)
        kinds = {"new": {}}
        if old and name != "gaussian":
            kinds["old"] = {"method": "quadrature"}
        row = {}
        for kind, kw in kinds.items():
            grid = jax.jit(lambda c, prior=prior, kw=kw: lt.matched_grid(prior, c, 7, **kw))
            path = jax.jit(
                lambda k, prior=prior, kw=kw: lt.matched_spline(prior, k, t, closed=True, **kw)
            )
            # A traced batch of weights: auto would pick the (shardable) quadrature map.
            kw_traced = kw or ({"method": "fft"} if name != "user Student-t(2)" else {})
            traced = jax.jit(
                lambda k, s, prior=prior, kw=kw_traced: lt.matched_spline(
                    prior, k, s, closed=True, **kw
                )
            )
            reps = repeats if kind == "new" else 1
            row[kind] = {
                "grid": _median_time(lambda g=grid, c=corners: g(c), reps),
                "path": _median_time(lambda p=path, k=keys: p(k), reps),
                "path traced t": _median_time(lambda f=traced, k=keys: f(k, jnp.asarray(t)), reps),
            }
        out[name] = row
    base = out["gaussian"]["new"]
    for row in out.values():
        for r in row.values():
            r.update({f"{k} ×gauss": r[k] / base[k] for k in list(r) if "×" not in k})
    return out


# --------------------------------------------------------------------------------------------
# 4. Grids and paths as the README uses them (d = 100), eager and jitted, cold and warm.

GRID_PATH_PRIORS = {
    "gaussian": lt.Gaussian(),
    "uniform": lt.Uniform(),
    "laplace": lt.Laplace(),
    "logistic": lt.Logistic(),
}


def bench_grids_paths(repeats: int, dim: int = 100, n: int = 5, frames: int = 120) -> dict:
    """``matched_grid`` (n × n) and looping ``matched_spline`` (8 keyframes) per prior.

    Each case is timed as a ratio to the same call under the Gaussian prior (closed form) in
    this process. ``first``: the first jitted call (compilation and table builds included);
    ``jit``/``eager``: later calls, median of ``repeats``. Paths use a NumPy t: ``frames``
    frames of a loop through 8 keyframes (``frames / 8`` per segment, 8 distinct weight
    vectors when that is whole), and ``odd t``: ``frames`` frames at t = 8 j / (frames - 1)
    (nearly every frame its own weight vector); ``path traced t`` is the odd-t path with t a
    jit argument (tables interpolated along the segments, no table built per call).
    """
    t = np.arange(frames) * 8 / frames
    odd = np.arange(frames) * 8 / (frames - 1)
    spline = lt.matched_spline
    out = {}
    for name, prior in GRID_PATH_PRIORS.items():
        corners = prior.sample(jax.random.key(0), (4, dim), jnp.float32)
        keys = prior.sample(jax.random.key(1), (8, dim), jnp.float32)
        calls = {
            "grid": (lambda c, p=prior: lt.matched_grid(p, c, n), (corners,)),
            "path": (lambda k, p=prior: spline(p, k, t, closed=True), (keys,)),
            "path odd t": (lambda k, p=prior: spline(p, k, odd, closed=True), (keys,)),
            "path traced t": (
                lambda k, s, p=prior: spline(p, k, s, closed=True),
                (keys, jnp.asarray(odd, jnp.float32)),
            ),
        }
        row = {}
        for case, (fn, args) in calls.items():
            jitted = jax.jit(fn)
            start = time.perf_counter()
            jax.block_until_ready(jitted(*args))
            row[f"{case} first"] = time.perf_counter() - start
            row[f"{case} jit"] = _median_time(lambda f=jitted, a=args: f(*a), repeats)
            if case != "path traced t":  # eager, t is concrete
                row[f"{case} eager"] = _median_time(lambda f=fn, a=args: f(*a), repeats)
        out[name] = row
    base = out["gaussian"]
    for row in out.values():
        row.update({f"{k} ×gauss": row[k] / base[k] for k in list(row)})
    return out


def print_grids_paths(results: dict) -> None:
    """One line per case: milliseconds and the ratio to the Gaussian, per prior."""
    cases = [k for k in results["gaussian"] if "×" not in k]
    print(f"{'':18s}" + "".join(f"{name + ' ms':>16s}{'×g':>6s}" for name in results))
    for c in cases:
        cells = "".join(f"{1e3 * r[c]:16.3f}{r[c + ' ×gauss']:6.1f}" for r in results.values())
        print(f"{c:18s}{cells}")


def machine() -> dict:
    model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "load_average": load,
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _print_parts_1_2(args, ref_repeats):
    print(f"\n1. matched_lerp / lerp on [{args.rows}, {args.dim}] float32, chunks of {args.chunk}")
    lerp = bench_lerp(args.rows, args.dim, args.chunk, args.repeats)
    print("(build: seconds spent building the map, once per chunk; apply: a prebuilt map's cost)")
    head = ("seconds", "× lerp", "target", "", "build s", "apply×")
    print(
        f"{'':20s}{head[0]:>10s}{head[1]:>9s}{head[2]:>8s}{head[3]:>8s}{head[4]:>9s}{head[5]:>8s}"
    )
    for name, r in lerp.items():
        target = r.get("target")
        mark = "" if target is None else ("ok" if r["ratio"] <= target else "MISSED")
        tgt = "" if target is None else f"≤{target:g}"
        extra = f"{r['build_seconds']:9.4f}{r['apply_ratio']:8.2f}" if target else ""
        print(f"{name:20s}{r['seconds']:10.4f}{r['ratio']:9.2f}{tgt:>8s}{mark:>8s}{extra}")

    print(f"\n2. matched ops vs NumPy/SciPy, [{args.ref_rows}, {args.dim}] (target ≥ 20×)")
    refs = bench_references(args.ref_rows, args.dim, args.repeats, ref_repeats)
    print(f"{'':32s}{'jax s':>10s}{'scipy s':>10s}{'speedup':>9s}")
    for name, r in refs.items():
        mark = "ok" if r["speedup"] >= 20 else "MISSED"
        print(
            f"{name:32s}{r['seconds']:10.4f}{r['reference_seconds']:10.4f}"
            f"{r['speedup']:9.1f}  {mark}"
        )
    return lerp, refs


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small arrays, 3 repeats")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=100)
    parser.add_argument("--chunk", type=int, default=250_000, help="rows per jitted call")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--ref-rows", type=int, default=100_000, help="rows of the SciPy part")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--paths-only", action="store_true", help="only part 3 (grids, paths)")
    parser.add_argument("--old", action="store_true", help="part 3: also time the old map")
    parser.add_argument(
        "--grids-only", action="store_true", help="only part 4 (grids, paths at d = 100)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.chunk, args.repeats, args.ref_rows = 50_000, 50_000, 3, 2_000
    ref_repeats = max(1, min(3, args.repeats))

    info = machine()
    print(f"{info['date']} · {info['cpu']} · {info['cores']} cores · load {info['load_average']}")
    print(f"jax {info['jax']} ({info['backend']})")

    lerp = refs = paths = None
    if not args.paths_only and not args.grids_only:
        lerp, refs = _print_parts_1_2(args, ref_repeats)
    if not args.grids_only:
        paths = _print_part_3(args)
    print("\n4. matched_grid (5×5) and looping matched_spline (120 frames, 8 keyframes), d = 100")
    grids = bench_grids_paths(args.repeats)
    print_grids_paths(grids)
    results = {
        "machine": info,
        "args": vars(args),
        "lerp": lerp,
        "references": refs,
        "paths": paths,
        "grids": grids,
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


def _print_part_3(args):
    print(
        "\n3. jitted 7×7 matched_grid and 120-frame looping matched_spline (8 keyframes), d = 512"
    )
    paths = bench_paths(args.repeats, args.old)
    cols = ("grid", "path", "path traced t")
    print(f"{'':22s}{'':5s}" + "".join(f"{c + ' ms':>18s}{'×gauss':>8s}" for c in cols))
    for name, row in paths.items():
        for kind, r in row.items():
            cells = "".join(f"{1e3 * r[c]:18.3f}{r[c + ' ×gauss']:8.1f}" for c in cols)
            print(f"{name:22s}{kind:5s}{cells}")
    return paths


if __name__ == "__main__":
    main()
