"""Time per AE-OT training step: the jitted on-device step vs a host-LP reference loop.

Ours: :func:`latentot.aeot.fit`'s jitted chunk runner (noise, code batch, batch LP with
:func:`latentot.aeot.solve_batch`, regression update; one host sync per chunk).

Reference: per step, the LP is solved on the host (scipy ``linear_sum_assignment`` for σ, then
the noise-side dual H by Bellman-Ford relaxation in NumPy over the tight constraints, which is
exact for the optimal assignment), and the same jitted regression update is applied. It pays
one device round trip per step, as a straightforward implementation of Algorithm 1 would.

Run: ``python benchmarks/aeot_train.py [--steps N] [--quick]``.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from scipy.optimize import linear_sum_assignment

from latentot import Gaussian, aeot
from latentot.aeot import train as train_mod
from latentot.aeot.sampler import _graphdef, init_params


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
    pconfig = aeot.Potential(d, output_scale=spread).config
    cfg = train_mod.TrainConfig(
        steps=steps,
        batch_size=m,
        learning_rate=1e-3,
        lam=1.0,
        penalty="vector",
        schedule="cosine",
        final_lr_fraction=0.01,
        lp_kwargs=(),
    )
    optimizer, _ = train_mod._make_optimizer(cfg)
    graphdef = _graphdef(tuple(sorted(pconfig.items())))
    params = init_params(pconfig, 0)
    with jax.numpy_dtype_promotion("standard"):
        opt_state = optimizer.init(params)

    # Ours: the jitted chunk runner of fit.
    run = train_mod._make_chunk_runner(graphdef, Gaussian(), cfg, aeot.solve_batch, steps)
    key = jax.random.key(0)
    p, o = jax.tree_util.tree_map(jnp.copy, (params, opt_state))
    p, o, _, stats = run(p, o, jnp.int32(0), jnp.int32(2), codes, key)  # compile
    jax.block_until_ready(stats)
    t = time.perf_counter()
    p, o, _, stats = run(p, o, jnp.int32(2), jnp.int32(steps), codes, key)
    jax.block_until_ready(stats)
    ours = (time.perf_counter() - t) / steps

    # Reference: host LP + the same jitted regression step.
    @jax.jit
    def update(params, opt_state, x, phi, target):
        def loss(p):
            return train_mod.regression_loss(
                nnx.merge(graphdef, p), x, phi, target, lam=1.0, penalty="vector"
            )[0]

        value, grads = jax.value_and_grad(loss)(params)
        with jax.numpy_dtype_promotion("standard"):
            updates, opt_state = optimizer.update(grads, opt_state, params)
        return jax.tree_util.tree_map(jnp.add, params, updates), opt_state, value

    rng = np.random.default_rng(0)
    codes_np = np.asarray(codes)
    p, o = jax.tree_util.tree_map(jnp.copy, (params, opt_state))

    def ref_step(p, o):
        x = rng.standard_normal((m, d)).astype(np.float32)
        y = codes_np[rng.choice(len(codes_np), m, replace=False)]
        phi, sigma = host_lp(x, y)
        p, o, value = update(p, o, x, phi, y[sigma] - x)
        float(value)  # the per-step host sync of a plain training loop
        return p, o

    p, o = ref_step(p, o)  # compile
    n_ref = max(3, steps // 4)
    t = time.perf_counter()
    for _ in range(n_ref):
        p, o = ref_step(p, o)
    ref = (time.perf_counter() - t) / n_ref
    return ours, ref


def main(argv: list[str] | None = None) -> None:
    """Parses the arguments and prints ms/step for ours and the reference loop."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--quick", action="store_true", help="one small configuration")
    args = parser.parse_args(argv)
    configs = [(2, 256)] if args.quick else [(2, 256), (2, 512), (16, 512), (2, 1024), (16, 1024)]
    print(f"{'d':>3} {'m':>5} {'ours ms/step':>13} {'reference ms/step':>18} {'speed-up':>9}")
    for d, m in configs:
        ours, ref = bench(d, m, args.steps)
        print(
            f"{d:>3} {m:>5} {1e3 * ours:>13.1f} {1e3 * ref:>18.1f} {ref / ours:>8.2f}x", flush=True
        )


if __name__ == "__main__":
    main()
