"""Time per AE-OT training step: the jitted on-device step vs a host-LP reference loop.

Ours: :meth:`latentot.aeot.Trainer.step` (``method="minibatch"``: noise, code batch, batch LP
with :func:`latentot.aeot.solve_batch`, regression update) in one jitted loop, as
:func:`latentot.aeot.fit` runs a chunk (one host sync per chunk).

Reference: per step, the LP is solved on the host (scipy ``linear_sum_assignment`` for σ, then
the noise-side dual H by Bellman-Ford relaxation in NumPy over the tight constraints, which is
exact for the optimal assignment), and the same jitted regression update is applied. It pays
one device round trip per step, as a straightforward implementation of Algorithm 1 would.

The debiased step (``--debiased``): the step of :func:`latentot.aeot.fit`'s default
``"debiased"`` trainer (default potential on a Bures base, batch 512), as a ratio to the
minibatch step above at the same m, d, measured in the same process. Both are timed on the
state after ``--warmup`` debiased steps on clustered codes (the pushed noise is then clustered
too, which is where the batch LPs get expensive). The ``plain LPs`` column solves the debiased
targets' two batch LPs at the solver's own settings instead of
:meth:`~latentot.aeot.BatchLPSolver.for_assignment` (the same permutations).

Run: ``python benchmarks/aeot_train.py [--steps N] [--quick] [--debiased] [--warmup W]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from scipy.optimize import linear_sum_assignment

from latentot import Gaussian, aeot
from latentot._promotion import third_party_promotion
from latentot.aeot.losses import regression_loss
from latentot.aeot.train import default_potential


def host_lp(x: np.ndarray, y: np.ndarray):
    """Exact batch LP on the host: (phi [m], assignment [m]) with cost ½‖x − y‖²."""
    c = 0.5 * np.sum((x[:, None, :] - y[None, :, :]) ** 2, axis=-1)
    _, sigma = linear_sum_assignment(c)
    # Tight pairs: H_σ(k) = H_k + c[k, σ(k)]. Feasibility H_σ(k) − H_i ≤ c[i, σ(k)] reads
    # H_k ≤ H_i + w[i, k] with w[i, k] = c[i, σ(k)] − c[k, σ(k)]: shortest paths (no negative
    # cycle because σ is optimal) from a virtual source joined to every node at length 0.
    w = c[:, sigma] - c[np.arange(len(x)), sigma][None, :]
    h = np.zeros(len(x))
    for _ in range(len(x)):
        new = np.minimum(h, np.min(h[:, None] + w, axis=0))
        if np.array_equal(new, h):
            break
        h = new
    return (h - h.mean()).astype(x.dtype), sigma


def make_codes(d: int, n: int) -> jax.Array:
    if d == 2:
        return aeot.eight_gaussians(jax.random.key(1), n, dtype=jnp.float32)
    k1, k2, k3 = jax.random.split(jax.random.key(1), 3)
    centres = 5.0 * jax.random.normal(k1, (10, d))
    return centres[jax.random.randint(k2, (n,), 0, 10)] + jax.random.normal(k3, (n, d))


def bench(d: int, m: int, steps: int) -> tuple[float, float]:
    codes = make_codes(d, 8 * m)
    spread = float(np.sqrt(np.mean(np.var(np.asarray(codes), axis=0))))
    potential = aeot.Potential(d, output_scale=spread)
    optimizer = aeot.default_optimizer(1e-3, steps)
    trainer = aeot.Trainer(
        graphdef=nnx.graphdef(potential),
        optimizer=optimizer,
        lp=aeot.BatchLPSolver(),
        method="minibatch",
        batch_size=m,
        penalty="vector",
    )
    state0 = trainer.init(jax.random.key(0), potential, Gaussian())

    # Ours: the trainer's step, n steps in one jitted fori_loop (fit's chunk).
    ours = _timed_steps(trainer, state0, codes, steps)

    # Reference: host LP + the same jitted regression step.
    graphdef = trainer.graphdef

    @jax.jit
    def update(params, rest, opt_state, x, phi, target):
        def loss(p):
            model = nnx.merge(graphdef, p, rest)
            return regression_loss(model, x, phi, target, lam=1.0, penalty="vector")[0]

        value, grads = jax.value_and_grad(loss)(params)
        with third_party_promotion():
            updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    rng = np.random.default_rng(0)
    codes_np = np.asarray(codes)
    p, r, o = state0.params, state0.rest, state0.opt_state

    def ref_step(p, o):
        x = rng.standard_normal((m, d)).astype(np.float32)
        y = codes_np[rng.choice(len(codes_np), m, replace=False)]
        phi, sigma = host_lp(x, y)
        p, o, value = update(p, r, o, x, phi, y[sigma] - x)
        float(value)  # the per-step host sync of a plain training loop
        return p, o

    p, o = ref_step(p, o)  # compile
    n_ref = max(3, steps // 4)
    t = time.perf_counter()
    for _ in range(n_ref):
        p, o = ref_step(p, o)
    ref = (time.perf_counter() - t) / n_ref
    return ours, ref


@dataclasses.dataclass(frozen=True)
class PlainSolver:
    """:func:`~latentot.aeot.solve_batch` at its defaults, without ``for_assignment``."""

    def __call__(self, x, y):
        return aeot.solve_batch(x, y)


def _timed_steps(trainer, state, codes, steps: int) -> float:
    """Seconds per step of ``trainer`` over ``steps`` steps from ``state`` (one jitted loop)."""

    @functools.partial(jax.jit, static_argnums=2)
    def run(state, codes, n):
        return jax.lax.fori_loop(0, n, lambda i, s: trainer.step(s, codes)[0], state)

    jax.block_until_ready(run(state, codes, steps))  # compile
    t = time.perf_counter()
    jax.block_until_ready(run(state, codes, steps))
    return (time.perf_counter() - t) / steps


def bench_debiased(d: int, m: int, steps: int, warmup: int) -> dict[str, float]:
    """ms/step of the minibatch step and of the default debiased step (with and without
    ``for_assignment``) on clustered codes, from the state after ``warmup`` debiased steps."""
    k1, k2, k3 = jax.random.split(jax.random.key(1), 3)
    centres = 5.0 * jax.random.normal(k1, (6, d))
    codes = centres[jax.random.randint(k2, (20_000,), 0, 6)] + jax.random.normal(k3, (20_000, d))
    spread = float(np.sqrt(np.mean(np.var(np.asarray(codes), axis=0))))
    kwargs = default_potential("debiased", d) | {"output_scale": spread}
    potential = aeot.Potential(d, rngs=nnx.Rngs(0), **kwargs)
    potential.set_base(*aeot.bures_map(codes, Gaussian()))
    common = {
        "graphdef": nnx.graphdef(potential),
        "optimizer": aeot.default_optimizer(1e-3, 1000),
        "batch_size": m,
        "scale": spread,
    }
    ours = aeot.Trainer(method="debiased", ema_decay=0.998, **common)
    plain = aeot.Trainer(method="debiased", ema_decay=0.998, lp=PlainSolver(), **common)
    minibatch = aeot.Trainer(method="minibatch", penalty="vector", **common)
    state = ours.init(jax.random.key(0), potential, Gaussian())
    warm = jax.jit(lambda s, c: jax.lax.fori_loop(0, warmup, lambda i, s: ours.step(s, c)[0], s))
    state = jax.block_until_ready(warm(state, codes))
    return {
        "minibatch": 1e3 * _timed_steps(minibatch, state, codes, steps),
        "debiased": 1e3 * _timed_steps(ours, state, codes, steps),
        "plain": 1e3 * _timed_steps(plain, state, codes, steps),
    }


def main(argv: list[str] | None = None) -> None:
    """Parses the arguments and prints ms/step for ours and the reference loop."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--quick", action="store_true", help="one small configuration")
    parser.add_argument(
        "--debiased", action="store_true", help="the debiased step against the minibatch step"
    )
    parser.add_argument("--warmup", type=int, default=300, help="debiased steps before timing")
    args = parser.parse_args(argv)
    if args.debiased:
        dims = [8] if args.quick else [8, 16, 32]
        print(
            f"{'d':>3} {'m':>5} {'minibatch ms':>13} {'debiased ms':>12} {'ratio':>6} "
            f"{'plain LPs ms':>13} {'ratio':>6}"
        )
        for d in dims:
            r = bench_debiased(d, 512, args.steps, args.warmup)
            mb = r["minibatch"]
            print(
                f"{d:>3} {512:>5} {mb:>13.1f} {r['debiased']:>12.1f} {r['debiased'] / mb:>6.2f} "
                f"{r['plain']:>13.1f} {r['plain'] / mb:>6.2f}",
                flush=True,
            )
        return
    configs = [(2, 256)] if args.quick else [(2, 256), (2, 512), (16, 512), (2, 1024), (16, 1024)]
    print(f"{'d':>3} {'m':>5} {'ours ms/step':>13} {'reference ms/step':>18} {'speed-up':>9}")
    for d, m in configs:
        ours, ref = bench(d, m, args.steps)
        print(
            f"{d:>3} {m:>5} {1e3 * ours:>13.1f} {1e3 * ref:>18.1f} {ref / ours:>8.2f}x", flush=True
        )


if __name__ == "__main__":
    main()
