"""AE-OT against known optimal maps: L2-UVP, pushed covariance error, fit time.

Pairs (``latentot.aeot.known_maps``): P = N(0, I) and Q = T*#P with T* the gradient of a convex
function, so T* is the optimal map: ``gaussian``, ``clusters``, ``mixture`` and the
families whose non-Gaussian part lives in a low-dimensional subspace, ``subspace``
(clusters in an 8-dim subspace over an anisotropic bulk), ``spiked`` (6 clusters over an
isotropic bulk) and ``bimodal`` (4 directions with a bimodal law of the bulk's variance). For
each pair and dimension: 20,000 codes y = T*(x), 4096 fresh test points, and for every method

* L2-UVP = 100 · mean‖T̂(x) − T*(x)‖² / Var(Q) on the test points (Korotin et al. 2021);
* cov = ‖Cov(T̂#P) − Cov(codes)‖_F / ‖Cov(codes)‖_F on 20,000 pushed samples (a perfect map
  measures 3–6% at these sizes: the two sample covariances differ by sampling error);
* on the ``bimodal`` pair, KS = the mean over its bimodal directions u of the two-sample
  Kolmogorov–Smirnov statistic between the 20,000 pushed samples' and the codes' marginals
  along u (the floor: ≤ 0.05; about 0.009 for two samples of the same law, and 0.14
  for Gaussian marginals, which the identity and linear maps give);
* the fit time: wall clock and, for latentot's methods, the process CPU time (all threads,
  compilation included; on a shared machine the CPU time is the fairer measure);
* how close the fitted map is to *an* optimal map without knowing T*, on 2048 fresh N(0, I)
  draws (:func:`latentot.aeot.transport_gap_from_samples`, docs/transport_gap.md;
  ``--gap-points``): ``gap``, the cyclical-monotonicity gap 1 − Σ⟨x̃ᵢ, T̃(xᵢ)⟩ / max_σ
  Σ⟨x̃ᵢ, T̃(x_σ(i))⟩ (centred; 0 for an optimal map, T* included), ``moved``, the fraction of
  the points that the optimal assignment reassigns, and ``monge``, ott-jax's entropic Monge
  gap less its entropic bias, relative to the same scale (between ``gap`` and ``gap`` +
  0.01 log n).

Methods (the registry :data:`REGISTRY`; a new method is a function ``problem -> Fitted``
decorated with ``@register("name")``, here or in a module given to ``--plugin``), all in the
same process on the same codes:

* ``aeot`` — :func:`latentot.aeot.fit` with library defaults (``method="auto"``: Liu et al.'s
  ``"minibatch"`` for d ≤ 2, ``"debiased"`` above);
* ``aeot-minibatch`` — ``fit(method="minibatch")``, Liu et al.'s Algorithm 1 with that method's
  defaults (batch 1024, median penalty, a max of 32 heads with a learnable shared
  quadratic);
* ``identity`` — x ↦ x;
* ``linear`` — the Bures map fitted to the codes' mean and covariance
  (:func:`latentot.aeot.bures_map`);
* ``ott-sd-hard`` / ``ott-sd-entropic`` — ott-jax ``SemidiscreteSolver`` on the codes (ε = 0,
  Adam, 500 iterations of 512 noise points against all N codes); the hard map sends x to the
  code of its Laguerre cell, the entropic map is the softmax average of the codes over the
  learnt potential with ε tuned *on the test points* (an optimistic choice for the peer).

Run: ``python benchmarks/aeot_known_maps.py [--dims 2,16,64,128,256,512] [--pairs subspace,...]
[--methods identity,linear,...] [--plugin my.module] [--codes 20000] [--gap-points 2048]
[--json out.json] [--fit-kwargs '{"batch_size": 1024}']`` (``--fit-kwargs``: keywords for
``aeot.fit`` in the ``aeot`` methods, to measure a variant against the same peers; the defaults
are every pair, dimension and registered method).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import platform
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from latentot import Gaussian, aeot
from latentot._promotion import third_party_promotion
from latentot.aeot import known_maps as km


@dataclasses.dataclass
class Problem:
    """What a method sees: the codes, the test noise ``x`` with its optimal images ``y`` (only
    the ``ott-sd-entropic`` peer looks at them, to tune its ε; it is an optimistic peer), the
    run's fit keywords and cache (shared between the methods of one pair)."""

    codes: jax.Array
    x: jax.Array
    y: jax.Array
    fit_kwargs: dict
    cache: dict


@dataclasses.dataclass
class Fitted:
    """A method's result: the map ``transport: [n, d] → [n, d]``, a note for the output line,
    and whether the process CPU time of the fit is meaningful (latentot's methods)."""

    transport: Callable
    note: str = ""
    cpu: bool = False


#: The method registry: name → ``fn(problem) -> Fitted``; ``--methods`` picks from it. A new
#: method registers itself with :func:`register` (here, or from a module passed to
#: ``--plugin``) and runs against the same peers and metrics.
REGISTRY: dict[str, Callable[[Problem], Fitted]] = {}


def register(name: str):
    def deco(fn):
        REGISTRY[name] = fn
        return fn

    return deco


def _fit_aeot(problem, **method):
    """``aeot.fit`` with ``--fit-kwargs`` and ``method``; the note gives the pursuit frame's k."""
    sampler = aeot.fit(jax.random.key(0), problem.codes, **(dict(problem.fit_kwargs) | method))
    jax.block_until_ready(sampler.sample(jax.random.key(1), 2))
    note = "" if sampler.frame is None else f"k={sampler.k} layers={len(sampler.frame.layers)}"
    return Fitted(sampler.transport, cpu=True, note=note)


@register("aeot")
def _aeot(problem):
    """``aeot.fit`` with library defaults (and ``--fit-kwargs``)."""
    return _fit_aeot(problem)


@register("aeot-debiased")
def _aeot_debiased(problem):
    """``method="debiased"``: latentot 0.2's default at every d >= 3."""
    return _fit_aeot(problem, method="debiased")


@register("aeot-minibatch")
def _aeot_minibatch(problem):
    return _fit_aeot(problem, method="minibatch")


@register("identity")
def _identity(problem):
    return Fitted(lambda z: z)


@register("linear")
def _linear(problem):
    a, b = aeot.bures_map(problem.codes, Gaussian())
    jax.block_until_ready(a)
    return Fitted(lambda z: z @ a + b)


@register("ott-sd-hard")
def _ott_hard(problem):
    if "ott" not in problem.cache:
        problem.cache["ott"] = _semidiscrete(problem.codes, problem.x)
    hard, _, _ = problem.cache["ott"]
    return Fitted(hard)


@register("ott-sd-entropic")
def _ott_entropic(problem):
    """The entropic map of the same potential, ε tuned on the test points (its fit time
    counts the tuning, and the solve when ``ott-sd-hard`` did not run before it)."""
    if "ott" not in problem.cache:
        problem.cache["ott"] = _semidiscrete(problem.codes, problem.x)
    _, entropic, mean_cost = problem.cache["ott"]
    best = None
    for rel in (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1):
        err = km.l2_uvp(entropic(problem.x, rel * mean_cost), problem.y, problem.codes)
        if best is None or err < best[0]:
            best = (err, rel)
    eps = best[1] * mean_cost
    return Fitted(lambda z: entropic(z, eps), note=f"ε = {best[1]:g} × mean cost")


def _semidiscrete(codes, test, n_iterations=500, batch=512):
    """ott-jax's semidiscrete dual on the codes; returns (hard map, entropic map at ε, the
    mean cost that ε is relative to)."""
    from ott.geometry import semidiscrete_pointcloud as sdpc
    from ott.problems.linear import semidiscrete_linear_problem as sdlp
    from ott.solvers.linear import semidiscrete

    def sampler(rng, shape, dtype=jnp.float32):
        return jax.random.normal(rng, shape, dtype)

    geom = sdpc.SemidiscretePointCloud(sampler, codes, epsilon=0.0)
    prob = sdlp.SemidiscreteLinearProblem(geom)
    mean_cost = float(jnp.mean(jnp.sum((test[:512, None] - codes[None, :512]) ** 2, -1)))
    solver = semidiscrete.SemidiscreteSolver(
        num_iterations=n_iterations,
        batch_size=batch,
        optimizer=optax.adam(1e-2 * mean_cost),
        error_eval_every=n_iterations,
    )
    with third_party_promotion():
        out = jax.jit(solver)(jax.random.key(0), prob)
    g = out.g
    code_sq = jnp.sum(codes**2, -1)

    @jax.jit
    def scores(x):  # g_j − ‖x − y_j‖² (ott's SqEuclidean cost), without an [n, N, d] array
        sq = jnp.sum(x**2, -1)[:, None] - 2.0 * (x @ codes.T) + code_sq[None, :]
        return g[None, :] - sq

    def hard(x):
        return jnp.concatenate([codes[jnp.argmax(scores(c), -1)] for c in _chunks(x)])

    def entropic(x, eps):
        parts = [jax.nn.softmax(scores(c) / eps, -1) @ codes for c in _chunks(x)]
        return jnp.concatenate(parts)

    return hard, entropic, mean_cost


def _chunks(x, size=512):
    return [x[i : i + size] for i in range(0, x.shape[0], size)]


def run(pairs, dims, methods, n_codes, n_test, fit_kwargs=None, gap_points=2048):
    """Every method on every pair and dimension; returns the rows as dicts (and prints them)."""
    rows = []
    for d in dims:
        for kind in pairs:
            pair = km.known_map(jax.random.key(100 + d), kind, d)
            _, codes = pair.sample(jax.random.key(1), n_codes)
            x, y = pair.sample(jax.random.key(2), n_test)
            z = jax.random.normal(jax.random.key(3), (20_000, d))
            xg = jax.random.normal(jax.random.key(4), (gap_points, d))
            bimodal = km.bimodal_directions(pair)
            problem = Problem(codes, x, y, dict(fit_kwargs or {}), {})
            for method in methods:
                t0, c0 = time.perf_counter(), time.process_time()
                fitted = REGISTRY[method](problem)
                fit_s = time.perf_counter() - t0
                cpu_s = time.process_time() - c0 if fitted.cpu else float("nan")
                pred, pushed = fitted.transport(x), fitted.transport(z)
                row = {
                    "pair": kind,
                    "d": d,
                    "method": method,
                    "l2_uvp": km.l2_uvp(pred, y, codes),
                    "cov": km.covariance_error(pushed, codes),
                    "fit_s": fit_s,
                    "cpu_s": cpu_s,
                    "note": fitted.note,
                }
                gaps = ""
                if gap_points:
                    t0 = time.perf_counter()
                    g = aeot.transport_gap_from_samples(xg, fitted.transport(xg))
                    row |= {
                        "gap": g.gap,
                        "moved": g.reassigned,
                        "monge": g.monge_gap_relative,
                        "gap_s": time.perf_counter() - t0,
                    }
                    gaps = f"gap {g.gap:.4f} moved {100 * g.reassigned:4.1f}%  "
                    gaps += f"monge {g.monge_gap_relative:.4f}  "
                ks = ""
                if bimodal.shape[0]:  # the bimodal directions: do the marginals match?
                    row["ks"] = km.marginal_ks(pushed, codes, bimodal)
                    ks = f"KS {row['ks']:.3f}  "
                rows.append(row)
                print(
                    f"{kind:9s} d={d:<4d} {method:16s} L2-UVP {row['l2_uvp']:8.3f}  "
                    f"cov {100 * row['cov']:6.1f}%  {ks}{gaps}fit {fit_s:7.1f} s  "
                    f"cpu {cpu_s:7.1f} s  "
                    f"{fitted.note}",
                    flush=True,
                )
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dims", default="2,16,64,128,256,512")
    parser.add_argument("--pairs", default=",".join(km.PAIRS))
    parser.add_argument(
        "--plugin",
        action="append",
        default=[],
        help="import this module first (it may register methods with register(name))",
    )
    parser.add_argument("--methods", default=None, help="comma-separated names (default: all)")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    parser.add_argument("--codes", type=int, default=20_000)
    parser.add_argument("--test", type=int, default=4096)
    parser.add_argument(
        "--gap-points", type=int, default=2048, help="points of the maps' gaps (0: skip them)"
    )
    parser.add_argument(
        "--fit-kwargs", default="{}", help="JSON dict of aeot.fit keywords for the aeot methods"
    )
    args = parser.parse_args(argv)
    for name in args.plugin:
        importlib.import_module(name)
    dims = [int(v) for v in args.dims.split(",")]
    pairs = args.pairs.split(",")
    for p in pairs:
        if p not in km.PAIRS:
            parser.error(f"unknown pair {p!r}; choose from {km.PAIRS}")
    methods = list(REGISTRY) if args.methods is None else args.methods.split(",")
    for m in methods:
        if m not in REGISTRY:
            parser.error(f"unknown method {m!r}; choose from {tuple(REGISTRY)}")
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"{stamp} · {platform.processor() or platform.machine()} · jax {jax.__version__}")
    fit_kwargs = json.loads(args.fit_kwargs)
    if fit_kwargs:
        print(f"aeot methods with fit keywords {fit_kwargs}")
    rows = run(pairs, dims, methods, args.codes, args.test, fit_kwargs, args.gap_points)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"stamp": stamp, "fit_kwargs": fit_kwargs, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
