"""The eight Gaussians (Liu et al. Fig. 2) under ``aeot.fit`` configurations, and a ceiling.

For each configuration (a JSON dict of :func:`latentot.aeot.fit` keywords, ``{}`` for the
defaults): fit on 4096 codes, draw 2000 samples, print the fraction within 3σ of a centre, the
centre shares, the W2 ratio, the quantiles of the distance to the nearest centre and the fit
time (wall and process CPU seconds).

``--ceiling`` measures what regression alone can reach, with no LP in the loop: exact OT pairs
(``scipy.optimize.linear_sum_assignment`` between 4096 noise points and 4096 fresh codes, four
times) are regressed with ∇D of the default potential (squared or median penalty), and the
k-nearest-neighbour mean of the same pairs is the conditional-mean regressor without a network.

Run: ``python benchmarks/aeot_eight_gaussians.py '{}' '{"method": "debiased"}' [--figure F.png]
[--seeds 0,1,2]`` (``--figure``: the samples of each configuration side by side, those beyond 3σ
in red; ``--seeds``: fit each configuration with these ``aeot.fit`` seeds, default 0, the slow
test's) or
``python benchmarks/aeot_eight_gaussians.py --ceiling``.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from scipy.optimize import linear_sum_assignment
from scipy.spatial import cKDTree

from latentot import Gaussian, aeot
from latentot.aeot.datasets import eight_gaussian_centres
from latentot.aeot.train import _build_potential

DATA_QUANTILES = "1.18 / 1.67 / 2.15 / 2.45 / 3.03"  # the data's own, 50/75/90/95/99%


def _codes():
    return aeot.eight_gaussians(jax.random.key(1), 4096, dtype=jnp.float32)


def _report(samples, label, seconds=""):
    r = aeot.eight_gaussians_report(jax.random.key(3), samples)
    dist = np.linalg.norm(
        np.asarray(samples, np.float64)[:, None] - eight_gaussian_centres()[None], axis=-1
    ).min(1)
    q = " / ".join(f"{v:.2f}" for v in np.quantile(dist, [0.5, 0.75, 0.9, 0.95, 0.99]))
    shares = r["centre_fractions"]
    print(
        f"{label}: within 3σ {100 * r['within_3sigma']:.1f}%, shares {shares.min():.3f}–"
        f"{shares.max():.3f}, W2 ratio {r['w2_ratio']:.2f}, distance quantiles {q} "
        f"(data {DATA_QUANTILES}) {seconds}",
        flush=True,
    )


def plot(samples_by_label, path):
    """Scatter of each configuration's samples, the 3σ circles dashed, outliers in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    centres = eight_gaussian_centres()
    n = len(samples_by_label)
    fig, axes = plt.subplots(1, n, figsize=(5 * n, 5), squeeze=False)
    for ax, (label, s) in zip(axes[0], samples_by_label.items(), strict=True):
        s = np.asarray(s, np.float64)
        bad = np.linalg.norm(s[:, None] - centres[None], axis=-1).min(1) > 3
        ax.scatter(*s[~bad].T, s=2, label="within 3σ of a centre")
        ax.scatter(*s[bad].T, s=4, c="r", label="beyond 3σ")
        for c in centres:
            ax.add_patch(plt.Circle(c, 3, fill=False, ls="--", color="gray"))
        ax.set_aspect("equal")
        ax.set_title(f"{label}: {100 * (1 - bad.mean()):.2f}% within 3σ", fontsize=9)
        ax.set_xlabel("x₁")
        ax.set_ylabel("x₂")
    axes[0][0].legend(loc="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def fit_configs(configs, figure=None, seeds=(0,)):
    codes = _codes()
    drawn = {}
    for kw in configs:
        for seed in seeds:
            t, c = time.perf_counter(), time.process_time()
            sampler = aeot.fit(jax.random.key(seed), codes, **kw)
            samples = jax.block_until_ready(sampler.sample(jax.random.key(2), 2000))
            took = f"{time.perf_counter() - t:.0f} s wall, {time.process_time() - c:.0f} s CPU"
            label = (json.dumps(kw) if kw else "defaults") + (
                "" if seeds == (0,) else f", fit seed {seed}"
            )
            _report(samples, label, took)
            drawn[label] = samples
    if figure:
        plot(drawn, figure)


def ceiling(steps=2000):
    xs, ts = [], []
    for s in range(4):
        x = np.asarray(jax.random.normal(jax.random.key(100 + s), (4096, 2)), np.float64)
        y = np.asarray(aeot.eight_gaussians(jax.random.key(200 + s), 4096), np.float64)
        _, col = linear_sum_assignment(((x[:, None] - y[None]) ** 2).sum(-1))
        xs.append(x)
        ts.append(y[col] - x)
    x_all, t_all = np.concatenate(xs), np.concatenate(ts)
    z = np.asarray(jax.random.normal(jax.random.key(2), (2000, 2)), np.float64)
    _report(x_all[:2000] + t_all[:2000], "exact OT pairs themselves")
    tree = cKDTree(x_all)
    for k in (1, 4, 16):
        _, i = tree.query(z, k)
        _report(z + t_all[i.reshape(len(z), -1)].mean(1), f"{k}-nearest-neighbour mean")
    codes = _codes()
    spread = float(jnp.sqrt(jnp.mean(jnp.sum((codes - codes.mean(0)) ** 2, -1))))
    x_all, t_all = jnp.asarray(x_all, jnp.float32), jnp.asarray(t_all, jnp.float32)
    for penalty in ("vector", "vector_l1"):
        for method in ("debiased", "minibatch"):
            module = _build_potential(None, codes, Gaussian(), spread, jax.random.key(0), method)
            opt = nnx.Optimizer(
                module, optax.adam(optax.cosine_decay_schedule(1e-3, steps)), wrt=nnx.Param
            )

            @nnx.jit
            def step(module, opt, xb, tb, penalty=penalty):
                def loss(m):
                    err = jnp.sum((m.gradient(xb) - tb) ** 2, -1)
                    if penalty == "vector":
                        return jnp.mean(err) / spread**2
                    return jnp.mean(jnp.sqrt(err + 1e-6)) / spread

                value, grads = nnx.value_and_grad(loss)(module)
                opt.update(module, grads)
                return value

            key = jax.random.key(5)
            for i in range(steps):
                idx = jax.random.randint(jax.random.fold_in(key, i), (512,), 0, x_all.shape[0])
                step(module, opt, x_all[idx], t_all[idx])
            samples = z + np.asarray(nnx.jit(lambda m, p: m.gradient(p))(module, jnp.asarray(z)))
            _report(samples, f"{method}'s default potential regressed on them, {penalty}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("configs", nargs="*", help="JSON dicts of aeot.fit keywords")
    parser.add_argument("--ceiling", action="store_true", help="the regression ceiling")
    parser.add_argument("--figure", help="write the samples' scatter plots to this PNG")
    parser.add_argument(
        "--seeds", default="0", help="fit seeds, comma-separated (default 0, the slow test's)"
    )
    args = parser.parse_args(argv)
    if args.ceiling:
        ceiling()
    configs = [json.loads(c) for c in args.configs] or ([] if args.ceiling else [{}])
    seeds = tuple(int(v) for v in args.seeds.split(","))
    fit_configs(configs, args.figure, seeds)


if __name__ == "__main__":
    main()
