"""AE-OT on real data: natural-image patches and the digits autoencoder's codes.

Data, nothing downloaded, fixed seeds (:func:`load_patches`, :func:`digits_codes`, :data:`CASES`):

* ``patches8`` / ``patches16``: grey patches (8×8, d = 64; 16×16, d = 256) of the two photographs
  of ``sklearn.datasets.load_sample_images()``: luminance rounded to 8 bits, divided by 255, plus
  uniform dequantisation noise of one grey level (U[0, 1/255)). ``patches8rgb``: the same 8×8
  patches in colour (the photographs' 8-bit R, G, B channels, d = 192). Patch positions are drawn
  without replacement from both photographs and split at random into 20,000 training codes,
  8192 test codes (the "real" side of every score), 8192 codes that fit the ICA directions, and
  8192 "real held-out" codes scored like a method's samples (the sampling-noise floor). Held-out
  patches are distinct positions, but they overlap training patches in the image plane.
* ``digits8`` / ``digits32`` / ``digits128``: codes of the digits demo's autoencoder
  (``latentot.digits``: ``split_digits(seed=0)``, ``train_autoencoder`` with the demo's 3000
  steps, latent dimension 8, 32 or 128). scikit-learn's digits are small (1797 images): the
  codes of the 1197 training digits are the training codes, the 300 ``reference`` digits the
  test codes, the 300 ``holdout`` digits fit the ICA directions *and* are the real held-out row.
  With 300 test codes every score is noisier (read the real held-out row as the floor).

Scores of a samples array ``[n, d]`` against the test codes, each lower is better
(:class:`Scorer`, :func:`score`):

* ``ica_ks``: the mean two-sample Kolmogorov–Smirnov statistic along the 16 most non-Gaussian
  (largest |excess kurtosis| on the ICA set) of 32 FastICA directions (scikit-learn FastICA with
  its own unit-variance whitening, fitted on the ICA set); min(32, d) and min(16, ⌈k/2⌉) when
  d < 32;
* ``radius_ks``: the KS statistic of the Mahalanobis radius ‖W(x − μ)‖ (μ, W from the training
  codes), i.e. of the contrast law;
* ``c2st``: the held-out accuracy of an MLP classifier (a small JAX ReLU MLP, two hidden layers
  of 128, 30 epochs of Adam 1e-3, batch 256, smaller below 4096 points) trained on half of
  (samples, test codes), both whitened with the training codes' W and balanced, and tested on
  the other half; 0.5 is perfect;
* ``energy``: the energy distance (U-statistic) on 4096 + 4096 points standardised per
  coordinate with the training codes' mean and std;
* ``var_ratio``: max over the principal directions of the training codes of
  max(var_samples / var_codes, var_codes / var_samples) (the floor: ≤ 1.5);
* ``out_of_range``: the fraction of sample coordinates outside the training codes'
  per-coordinate [min, max];
* ``off_span``: where the training codes do not span R^d (eigenvalues of their covariance
  below 1e-10 × the largest: the digits128 codes have rank 48), the samples' variance outside
  their span over the codes' total variance (real codes: ~1e-14). The whitening, the radius,
  the C2ST input and ``var_ratio`` use the span only, so a leak of rounding size out of it
  does not decide them;
* ``memorisation``: median distance from 2048 samples to their nearest training code over the
  same for 2048 test codes. The one score that is not "lower is better": ≈ 1 is right, a
  sampler that copies its training codes scores ≪ 1, samples off the codes' support score ≫ 1.

How close each method's map (noise → codes) is to an optimal one, on 2048 N(0, I) draws
(:func:`latentot.aeot.transport_gap_from_samples`, docs/transport_gap.md; ``--gap-points``):

* ``cm_gap``: the cyclical-monotonicity gap 1 − Σ⟨x̃ᵢ, T̃(xᵢ)⟩ / max_σ Σ⟨x̃ᵢ, T̃(x_σ(i))⟩
  (centred; 0 for an optimal map), and ``reassigned``, the fraction of the points that the
  optimal assignment moves;
* ``monge_rel``: ott-jax's entropic Monge gap (ε = 0.01 × the cross term's scale) less its
  entropic bias ε log n, over the same scale: between ``cm_gap`` and ``cm_gap`` + 0.01 log n.

Methods (:data:`METHODS`: ``name -> fit(rng, train_codes) -> sample(rng, n) -> [n, d]``), all in
the same process on the same codes, each with its fit and sample wall time:

* ``aeot`` — :func:`latentot.aeot.fit` with library defaults (``--fit-kwargs`` JSON is passed to
  it, to measure a variant against the same peers);
* ``linear`` — the Bures map z ↦ A z + b onto the codes' mean and covariance
  (:func:`latentot.aeot.bures_map`);
* ``rbig`` — RBIG (Laparra et al. 2011), written here in NumPy: the codes whitened with their
  mean and covariance, then 30 layers of marginal Gaussianisation (empirical CDF on 2000
  quantile knots, Φ⁻¹) and a random rotation, inverted to sample (the inverse marginals clamp to
  each layer's training range);
* ``flowjax`` — a flowjax rational-quadratic coupling flow (6 layers, 8 knots on [−5, 5],
  conditioner width 256, Adam 1e-3, batch 256, at most 40 epochs with flowjax's early stopping
  on a 10% validation split), on the codes whitened with their mean and covariance; skipped with
  a message if flowjax is not importable;
* ``ott-entropic`` — ott-jax's entropic map: Sinkhorn between 4096 N(0, I) points and 4096
  whitened training codes, ``to_dual_potentials().transport`` of fresh noise (the softmax
  average of the codes, the barycentric projection), un-whitened. The whitening is the
  symmetric Σ^{-½}: the entropic map is the gradient of a convex function and Σ^½ is symmetric
  positive definite, so the composed map stays closer to an optimal one (whitening on the
  principal axes, which gives the same law of samples, rotates the noise: the map's
  cyclical-monotonicity gap on patches8 is 0.94 that way, 0.11 this way; not 0, since Σ^½ and
  the entropic map's Jacobian do not commute). ε = 1 in whitened units,
  chosen once on patches8 among ott's default (0.05 × the cost's std = 6.0 there: samples
  shrunk towards the mean, var-ratio 8.7, energy 2.5, C2ST 0.92), 1 and 0.3 (0.3 nears the
  training codes: memorisation 0.52; ICA-KS / radius-KS / C2ST 0.066 / 0.094 / 0.769 against
  0.078 / 0.105 / 0.778 at ε = 1).

Run: ``python benchmarks/aeot_real_data.py [--cases patches8,patches16,patches8rgb,digits8,...]
[--methods aeot,linear,rbig,flowjax,ott-entropic] [--fit-kwargs '{"steps": 2000}']
[--gap-points 2048] [--json out.json]``. Prints a markdown table per case. To plug in a method
from Python::

    import aeot_real_data as bench
    bench.METHODS["mine"] = lambda rng, codes: (lambda rng, n: my_samples)
    bench.main(["--methods", "mine,linear", "--cases", "patches8"])
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import platform
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from scipy import special, stats

from latentot import Gaussian, aeot
from latentot._promotion import third_party_promotion

__all__ = [
    "CASES",
    "METHODS",
    "Case",
    "Scorer",
    "digits_codes",
    "ks_statistic",
    "load_case",
    "load_patches",
    "main",
    "run",
    "score",
]

SCORES = (
    "ica_ks",
    "radius_ks",
    "c2st",
    "energy",
    "var_ratio",
    "out_of_range",
    "memorisation",
    "off_span",
)
GAPS = ("cm_gap", "reassigned", "monge_rel")

# --------------------------------------------------------------------------------------------
# Data


@dataclasses.dataclass(frozen=True)
class Case:
    """One real data set: float32 arrays ``[n, d]``.

    ``train`` fits the methods; ``test`` is the real side of every score; ``ica`` fits the ICA
    directions; ``floor`` is scored like a method's samples (the "real held-out" row).
    """

    name: str
    train: np.ndarray
    test: np.ndarray
    ica: np.ndarray
    floor: np.ndarray
    note: str = ""

    @property
    def dim(self) -> int:
        return self.train.shape[1]


def _photos(colour: bool = False) -> list[np.ndarray]:
    """The two photographs of ``load_sample_images`` as 8-bit levels (float64 0..255): grey
    ``[h, w]``, or ``[h, w, 3]`` in colour."""
    from sklearn.datasets import load_sample_images

    images = [np.asarray(im, np.float64) for im in load_sample_images().images]
    if colour:
        return images
    weights = np.array([0.299, 0.587, 0.114])
    return [np.rint(im @ weights) for im in images]


def load_patches(
    size: int,
    *,
    n_train: int = 20_000,
    n_test: int = 8192,
    n_ica: int = 8192,
    n_floor: int = 8192,
    seed: int = 0,
    colour: bool = False,
) -> Case:
    """Grey ``size``×``size`` patches of the two sklearn sample photographs (d = size²), or
    colour ones (``colour=True``: d = 3 size², pixel-major R, G, B).

    Intensities are the 8-bit levels / 255 plus U[0, 1/255) noise. Positions are drawn
    without replacement over both photographs and split at random into the four parts.
    """
    photos = _photos(colour)
    channels = 3 if colour else 1
    rng = np.random.default_rng(seed)
    total = n_train + n_test + n_ica + n_floor
    positions = []
    for k, im in enumerate(photos):
        h, w = im.shape[0] - size + 1, im.shape[1] - size + 1
        rr, cc = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        positions.append(np.stack([np.full(h * w, k), rr.ravel(), cc.ravel()], 1))
    positions = np.concatenate(positions)
    pick = positions[rng.choice(len(positions), total, replace=False)]
    off = np.arange(size)
    patches = np.empty((total, size * size * channels), np.float64)
    for k, im in enumerate(photos):
        sel = pick[:, 0] == k
        r = pick[sel, 1][:, None, None] + off[None, :, None]
        c = pick[sel, 2][:, None, None] + off[None, None, :]
        patches[sel] = im[r, c].reshape(-1, size * size * channels)
    x = (patches + rng.uniform(0.0, 1.0, patches.shape)) / 255.0
    x = x.astype(np.float32)
    cuts = np.cumsum([n_train, n_test, n_ica])
    train, test, ica, floor = np.split(x, cuts)
    note = (
        f"{'colour' if colour else 'grey'} {size}×{size} patches of sklearn's 2 sample photos, "
        f"{n_train}/{n_test}/{n_ica}/{n_floor} (train/test/ICA/real held-out), seed {seed}"
    )
    name = f"patches{size}rgb" if colour else f"patches{size}"
    return Case(name, train, test, ica, floor, note)


@functools.cache
def digits_codes(dim: int, *, seed: int = 0, steps: int | None = None) -> Case:
    """Codes of the digits demo's autoencoder at latent dimension ``dim``.

    ``split_digits(seed)`` (1197 / 300 / 300 digits), ``train_autoencoder`` with the demo's
    budget (3000 steps, a few CPU seconds), key ``jax.random.key(seed)``. Training codes: the
    train digits; test codes: ``reference``; ICA set and real held-out row: ``holdout``.
    """
    from latentot.digits import models
    from latentot.digits.budget import Budget

    steps = Budget().autoencoder_steps if steps is None else steps
    split = models.split_digits(seed=seed)
    ae, _ = models.train_autoencoder(
        jax.random.key(seed), split.train_x, latent_dim=dim, steps=steps
    )

    def enc(x):
        return np.asarray(ae.encode(x), np.float32)

    train, test, hold = enc(split.train_x), enc(split.reference_x), enc(split.holdout_x)
    note = (
        f"digits autoencoder codes, d = {dim}, {steps} AE steps, {len(train)}/{len(test)}/"
        f"{len(hold)} (train/test/ICA = real held-out): small data set"
    )
    return Case(f"digits{dim}", train, test, hold, hold, note)


CASES: dict[str, Callable[[], Case]] = {
    "patches8": functools.partial(load_patches, 8),
    "patches16": functools.partial(load_patches, 16),
    "patches8rgb": functools.partial(load_patches, 8, colour=True),
    "digits8": functools.partial(digits_codes, 8),
    "digits32": functools.partial(digits_codes, 32),
    "digits128": functools.partial(digits_codes, 128),
}


def load_case(name: str) -> Case:
    """The case ``name`` of :data:`CASES`."""
    return CASES[name]()


# --------------------------------------------------------------------------------------------
# Scores


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample KS statistic sup |F_a − F_b| of 1-D samples (scipy's ``ks_2samp`` statistic)."""
    a, b = np.sort(np.asarray(a, np.float64)), np.sort(np.asarray(b, np.float64))
    grid = np.concatenate([a, b])
    fa = np.searchsorted(a, grid, side="right") / len(a)
    fb = np.searchsorted(b, grid, side="right") / len(b)
    return float(np.max(np.abs(fa - fb)))


def _nn_dist(queries: np.ndarray, ref: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """Euclidean distance from each query row to its nearest row of ``ref``."""
    q, r = np.asarray(queries, np.float64), np.asarray(ref, np.float64)
    rr = np.sum(r * r, 1)
    out = []
    for i in range(0, len(q), chunk):
        qi = q[i : i + chunk]
        d2 = np.sum(qi * qi, 1)[:, None] + rr[None, :] - 2.0 * qi @ r.T
        out.append(np.sqrt(np.maximum(d2.min(1), 0.0)))
    return np.concatenate(out)


def _mean_dist(x: np.ndarray, y: np.ndarray, same: bool) -> float:
    d2 = np.sum(x * x, 1)[:, None] + np.sum(y * y, 1)[None, :] - 2.0 * x @ y.T
    d = np.sqrt(np.maximum(d2, 0.0))
    if same:
        n = len(x)
        return float((d.sum() - np.trace(d)) / (n * (n - 1)))
    return float(d.mean())


def energy_distance(x: np.ndarray, y: np.ndarray) -> float:
    """Energy distance 2 E‖X − Y‖ − E‖X − X'‖ − E‖Y − Y'‖ (U-statistics within)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return 2 * _mean_dist(x, y, False) - _mean_dist(x, x, True) - _mean_dist(y, y, True)


def _mlp(params, x):
    for w, b in params[:-1]:
        x = jax.nn.relu(x @ w + b)
    w, b = params[-1]
    return (x @ w + b)[:, 0]


@functools.partial(jax.jit, static_argnames=("hidden", "epochs", "batch_size"))
def _c2st_jit(key, x_train, y_train, x_test, y_test, hidden, epochs, batch_size):
    import optax

    from latentot._promotion import promotion_clean

    sizes = (x_train.shape[1], *hidden, 1)
    keys = jax.random.split(key, len(sizes))
    params = [
        (
            jax.random.normal(k, (i, o), jnp.float32) * jnp.sqrt(jnp.float32(2.0 / i)),
            jnp.zeros((o,), jnp.float32),
        )
        for k, i, o in zip(keys[:-1], sizes[:-1], sizes[1:], strict=True)
    ]
    opt = promotion_clean(optax.adam(1e-3))
    state = opt.init(params)
    n = x_train.shape[0]
    bs = min(batch_size, n)
    steps = n // bs

    def loss(p, xb, yb):
        return jnp.mean(optax.sigmoid_binary_cross_entropy(_mlp(p, xb), yb))

    def step(carry, idx):
        p, s = carry
        g = jax.grad(loss)(p, x_train[idx], y_train[idx])
        u, s = opt.update(g, s, p)
        return (optax.apply_updates(p, u), s), None

    perms = jax.vmap(lambda k: jax.random.permutation(k, n)[: steps * bs])(
        jax.random.split(keys[-1], epochs)
    )
    (params, _), _ = jax.lax.scan(step, (params, state), perms.reshape(epochs * steps, bs))
    pred = (_mlp(params, x_test) > 0).astype(jnp.float32)
    return jnp.mean((pred == y_test).astype(jnp.float32))


def c2st_accuracy(
    key, x_train, y_train, x_test, y_test, *, hidden=(128, 128), epochs=30, batch_size=256
) -> float:
    """Test accuracy of a ReLU MLP (Adam 1e-3, logistic loss) trained on ``(x_train, y_train)``.

    A small JAX classifier (one compilation per shape): a few seconds on 8192 points, where
    scikit-learn's ``MLPClassifier`` took 20–50 s on the 2-core machine.
    """
    args = [jnp.asarray(a, jnp.float32) for a in (x_train, y_train, x_test, y_test)]
    return float(_c2st_jit(key, *args, tuple(hidden), int(epochs), int(batch_size)))


class Scorer:
    """Scores of samples against real codes, its references fitted once.

    Args:
      train: the training codes ``[N, d]`` (whitening, principal directions, range, nearest
        neighbours).
      test: the real codes the samples are compared with ``[m, d]``.
      ica: the set that fits the ICA directions ``[k, d]`` (disjoint from ``test``).
      seed: seed of the subsampling, FastICA and the classifier.
    """

    def __init__(
        self,
        train,
        test,
        ica,
        *,
        seed: int = 0,
        n_components: int = 32,
        n_top: int = 16,
        max_points: int = 8192,
        energy_points: int = 4096,
        nn_points: int = 2048,
        c2st_hidden: tuple[int, ...] = (128, 128),
        c2st_epochs: int = 30,
    ):
        from sklearn.decomposition import FastICA

        self.train = np.asarray(train, np.float32)
        self.test = np.asarray(test, np.float32)
        self.seed = seed
        self.max_points, self.energy_points, self.nn_points = max_points, energy_points, nn_points
        self.c2st_hidden, self.c2st_epochs = c2st_hidden, c2st_epochs
        t = self.train.astype(np.float64)
        self.mean = t.mean(0)
        self.std = t.std(0) + 1e-12
        evals, evecs = np.linalg.eigh(np.cov(t, rowvar=False, bias=True))
        keep = evals > 1e-10 * evals.max()  # the codes' span (digits128: rank 48 of 128)
        self.rank = int(keep.sum())
        self.trace = float(evals.sum())
        self.null = evecs[:, ~keep]
        self.evals, self.evecs = evals[keep], evecs[:, keep]
        self.whiten = self.evecs / np.sqrt(self.evals)  # x ↦ (x − μ) @ whiten
        self.lo, self.hi = self.train.min(0), self.train.max(0)
        d = t.shape[1]
        k = min(n_components, d)
        self.ica = FastICA(
            n_components=k, whiten="unit-variance", random_state=seed, max_iter=500, tol=1e-4
        )
        with np.errstate(all="ignore"):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                src = self.ica.fit_transform(np.asarray(ica, np.float64))
        kurt = np.abs(stats.kurtosis(src, axis=0))
        self.top = np.argsort(-kurt)[: min(n_top, max(1, -(-k // 2)))]
        self.ica_kurtosis = stats.kurtosis(src, axis=0)[self.top]
        self._test_src = self._sources(self.test)
        self._test_radius = self._radius(self.test)
        rng = np.random.default_rng(seed + 1)
        self._test_nn = _nn_dist(self._sub(self.test, nn_points, rng), self.train)

    def _sub(self, x, n, rng):
        return x if len(x) <= n else x[rng.choice(len(x), n, replace=False)]

    def _sources(self, x):
        return self.ica.transform(np.asarray(x, np.float64))[:, self.top]

    def _radius(self, x):
        return np.linalg.norm((np.asarray(x, np.float64) - self.mean) @ self.whiten, axis=1)

    def c2st(self, samples: np.ndarray) -> float:
        """Held-out accuracy of an MLP telling ``samples`` from the test codes (0.5 is perfect)."""
        rng = np.random.default_rng(self.seed + 2)
        n = min(len(samples), len(self.test), self.max_points)
        a, b = self._sub(samples, n, rng)[:n], self._sub(self.test, n, rng)[:n]
        x = np.concatenate([a, b]).astype(np.float64)
        x = np.clip((x - self.mean) @ self.whiten, -1e3, 1e3).astype(np.float32)
        y = np.concatenate([np.ones(n), np.zeros(n)]).astype(np.float32)
        perm = rng.permutation(2 * n)
        x, y = x[perm], y[perm]
        return c2st_accuracy(
            jax.random.key(self.seed),
            x[:n],
            y[:n],
            x[n:],
            y[n:],
            hidden=self.c2st_hidden,
            epochs=self.c2st_epochs,
            batch_size=min(256, max(32, n // 16)),  # ≥ 16 steps an epoch on small sets
        )

    def __call__(self, samples) -> dict[str, float]:
        """All the scores of ``samples`` ``[n, d]`` (see the module docstring)."""
        s = np.asarray(samples, np.float32)
        if not np.all(np.isfinite(s)):
            bad = float(np.mean(~np.isfinite(s).all(1)))
            s = s[np.isfinite(s).all(1)]
            if len(s) < 10:
                return {k: float("nan") for k in SCORES} | {"nonfinite_rows": bad}
        else:
            bad = 0.0
        rng = np.random.default_rng(self.seed + 3)
        s_max = self._sub(s, self.max_points, rng)
        src = self._sources(s_max)
        ica_ks = np.mean(
            [ks_statistic(src[:, j], self._test_src[:, j]) for j in range(src.shape[1])]
        )
        radius_ks = ks_statistic(self._radius(s_max), self._test_radius)
        e_rng = np.random.default_rng(self.seed + 4)
        xe = (self._sub(s, self.energy_points, e_rng) - self.mean) / self.std
        ye = (self._sub(self.test, self.energy_points, e_rng) - self.mean) / self.std
        var = np.var((s_max.astype(np.float64) - self.mean) @ self.evecs, axis=0)
        ratio = np.maximum(var, 1e-300) / self.evals
        nn = _nn_dist(self._sub(s, self.nn_points, rng), self.train)
        return {
            "ica_ks": float(ica_ks),
            "radius_ks": radius_ks,
            "c2st": self.c2st(s),
            "energy": energy_distance(xe, ye),
            "var_ratio": float(np.max(np.maximum(ratio, 1.0 / ratio))),
            "out_of_range": float(np.mean((s < self.lo) | (s > self.hi))),
            "memorisation": float(np.median(nn) / np.median(self._test_nn)),
            "off_span": float(np.sum(np.var(s_max.astype(np.float64) @ self.null, 0)) / self.trace),
            "nonfinite_rows": bad,
        }


def score(samples, real, train, ica, **kwargs) -> dict[str, float]:
    """One-shot :class:`Scorer` ``(train, real, ica, **kwargs)(samples)``."""
    return Scorer(train, real, ica, **kwargs)(samples)


# --------------------------------------------------------------------------------------------
# Methods: fit(rng, train_codes [N, d]) -> sample(rng, n) -> [n, d]; the sample function also
# carries its map, ``sample.transport``: N(0, I) noise [n, d] -> codes [n, d] (NumPy).

Sample = Callable[[jax.Array, int], np.ndarray]
Fit = Callable[[jax.Array, np.ndarray], Sample]


def _seed(rng: jax.Array) -> int:
    return int(jax.random.randint(rng, (), 0, 2**31 - 1))


def fit_aeot(rng, codes, **fit_kwargs) -> Sample:
    """:func:`latentot.aeot.fit` (defaults unless ``fit_kwargs``); samples with ``sample``."""
    sampler = aeot.fit(rng, jnp.asarray(codes), **fit_kwargs)
    jax.block_until_ready(sampler.params)

    def sample(rng, n):
        return np.asarray(sampler.sample(rng, n))

    sample.transport = lambda z: np.asarray(sampler.transport(jnp.asarray(z)))  # type: ignore[attr-defined]
    return sample


def fit_linear(rng, codes) -> Sample:
    """The Bures map from N(0, I) onto the codes' mean and covariance."""
    a, b = aeot.bures_map(jnp.asarray(codes), Gaussian())
    a, b = np.asarray(a), np.asarray(b)
    d = a.shape[0]

    def transport(z):
        return np.asarray(z) @ a + b

    def sample(rng, n):
        return transport(np.asarray(jax.random.normal(rng, (n, d), jnp.float32)))

    sample.transport = transport  # type: ignore[attr-defined]
    return sample


class RBIG:
    """Rotation-based iterative Gaussianisation (Laparra, Camps-Valls & Malo 2011), NumPy.

    Each layer (on whitened codes, see :func:`fit_rbig`): every coordinate through its
    empirical CDF (``knots`` quantiles, linear in between, clamped outside) and Φ⁻¹, then a
    random rotation. Sampling runs the layers
    backwards from N(0, I).
    """

    def __init__(self, layers: int = 30, knots: int = 2000):
        self.layers, self.knots = layers, knots

    def fit(self, x: np.ndarray, seed: int = 0) -> RBIG:
        rng = np.random.default_rng(seed)
        x = np.asarray(x, np.float64)
        n, d = x.shape
        k = min(self.knots, n)
        self.p = np.linspace(0.5 / n, 1.0 - 0.5 / n, k)
        self.quantiles, self.rotations = [], []
        for _ in range(self.layers):
            q = np.quantile(x, self.p, axis=0)  # [k, d]
            q = np.maximum.accumulate(q + 1e-12 * np.arange(k)[:, None], axis=0)
            u = np.empty_like(x)
            for j in range(d):
                u[:, j] = np.interp(x[:, j], q[:, j], self.p)
            rot, _ = np.linalg.qr(rng.standard_normal((d, d)))
            x = special.ndtri(u) @ rot
            self.quantiles.append(q.astype(np.float64))
            self.rotations.append(rot)
        return self

    def sample(self, z: np.ndarray) -> np.ndarray:
        x = np.asarray(z, np.float64)
        for q, rot in zip(self.quantiles[::-1], self.rotations[::-1], strict=True):
            u = special.ndtr(x @ rot.T)
            x = np.empty_like(u)
            for j in range(u.shape[1]):
                x[:, j] = np.interp(u[:, j], self.p, q[:, j])
        return x


def fit_rbig(rng, codes, layers: int = 30) -> Sample:
    """RBIG with ``layers`` layers (see :class:`RBIG`)."""
    mean, w, w_inv = _whitening(codes)
    model = RBIG(layers).fit((np.asarray(codes, np.float64) - mean) @ w, seed=_seed(rng))
    d = codes.shape[1]

    def transport(z):
        return (model.sample(z) @ w_inv + mean).astype(np.float32)

    def sample(rng, n):
        return transport(np.asarray(jax.random.normal(rng, (n, d), jnp.float32)))

    sample.transport = transport  # type: ignore[attr-defined]
    return sample


def _whitening(codes, symmetric: bool = False):
    """``(mean, w, w_inv)``: whiten with ``(x − mean) @ w``, colour with ``y @ w_inv + mean``;
    principal axes, or ``symmetric``: w = Σ^{-½}, w_inv = Σ^½ (no rotation of the noise)."""
    c = np.asarray(codes, np.float64)
    mean = c.mean(0)
    evals, evecs = np.linalg.eigh(np.cov(c, rowvar=False, bias=True))
    evals = np.maximum(evals, 1e-12 * evals.max())
    w = evecs / np.sqrt(evals)
    w_inv = (evecs * np.sqrt(evals)).T
    if symmetric:
        w, w_inv = w @ evecs.T, evecs @ w_inv
    return mean, w, w_inv


def fit_flowjax(
    rng, codes, layers: int = 6, width: int = 256, epochs: int = 40, knots: int = 8
) -> Sample:
    """A flowjax rational-quadratic coupling flow on the whitened codes."""
    import equinox as eqx
    from flowjax.bijections import RationalQuadraticSpline
    from flowjax.distributions import StandardNormal
    from flowjax.flows import coupling_flow
    from flowjax.train import fit_to_data

    mean, w, w_inv = _whitening(codes)
    x = jnp.asarray((np.asarray(codes, np.float64) - mean) @ w, jnp.float32)
    d = x.shape[1]
    k_init, k_fit = jax.random.split(rng)
    flow = coupling_flow(
        k_init,
        base_dist=StandardNormal((d,)),
        transformer=RationalQuadraticSpline(knots=knots, interval=5),
        flow_layers=layers,
        nn_width=width,
    )
    with third_party_promotion():
        flow, losses = fit_to_data(
            k_fit,
            flow,
            x,
            learning_rate=1e-3,
            max_epochs=epochs,
            batch_size=256,
            show_progress=False,
        )
    draw = eqx.filter_jit(lambda f, key, n: f.sample(key, (n,)))
    push = eqx.filter_jit(lambda f, z: jax.vmap(f.bijection.transform)(z))

    def sample(rng, n):
        with third_party_promotion():
            y = np.asarray(draw(flow, rng, n), np.float64)
        return (y @ w_inv + mean).astype(np.float32)

    def transport(z):  # the flow's map from its N(0, I) base, un-whitened
        with third_party_promotion():
            y = np.asarray(push(flow, jnp.asarray(z, jnp.float32)), np.float64)
        return (y @ w_inv + mean).astype(np.float32)

    sample.transport = transport  # type: ignore[attr-defined]

    info = {"epochs": len(losses["train"]), "best_val": float(min(losses["val"]))}
    sample.info = info  # type: ignore[attr-defined]
    return sample


def fit_ott_entropic(rng, codes, n_points: int = 4096, epsilon: float | None = 1.0) -> Sample:
    """ott-jax's entropic map from N(0, I) onto the whitened codes (Sinkhorn on ``n_points``).

    ``epsilon`` is absolute, in whitened units (``None``: ott's default, 0.05 × the std of the
    cost matrix, which is 6.0 at d = 64 and shrinks the samples towards the mean).
    """
    from ott.geometry import pointcloud
    from ott.problems.linear import linear_problem
    from ott.solvers.linear import sinkhorn

    mean, w, w_inv = _whitening(codes, symmetric=True)
    k_noise, k_sub = jax.random.split(rng)
    codes = np.asarray(codes)
    idx = np.random.default_rng(_seed(k_sub)).choice(
        len(codes), min(n_points, len(codes)), replace=False
    )
    y = jnp.asarray((codes[idx].astype(np.float64) - mean) @ w, jnp.float32)
    x = jax.random.normal(k_noise, y.shape, jnp.float32)
    with third_party_promotion():
        geom = pointcloud.PointCloud(x, y, epsilon=epsilon)
        out = jax.jit(sinkhorn.Sinkhorn(max_iterations=3000))(linear_problem.LinearProblem(geom))
        pot = out.to_dual_potentials()
        transport = jax.jit(pot.transport)
    d = y.shape[1]

    def push(z):
        z = jnp.asarray(z, jnp.float32)
        with third_party_promotion():
            parts = [np.asarray(transport(z[i : i + 512])) for i in range(0, len(z), 512)]
        return (np.concatenate(parts).astype(np.float64) @ w_inv + mean).astype(np.float32)

    def sample(rng, n):
        return push(jax.random.normal(rng, (n, d), jnp.float32))

    sample.transport = push  # type: ignore[attr-defined]
    sample.info = {  # type: ignore[attr-defined]
        "converged": bool(out.converged),
        "epsilon": float(geom.epsilon),
        "iterations": int(out.n_iters),
    }
    return sample


METHODS: dict[str, Fit] = {
    "aeot": fit_aeot,
    # the default of latentot 0.2 at every d >= 3, the block method of "pursuit" below d = 33
    "aeot-debiased": functools.partial(fit_aeot, method="debiased"),
    "aeot-pursuit": functools.partial(fit_aeot, method="pursuit"),
    "linear": fit_linear,
    "rbig": fit_rbig,
    "flowjax": fit_flowjax,
    "ott-entropic": fit_ott_entropic,
}


# --------------------------------------------------------------------------------------------
# Driver


def _fmt(v, key):
    if key in ("out_of_range",):
        return f"{100 * v:.2f}%"
    if key == "energy":
        return f"{v:.4f}"
    if key in ("var_ratio", "memorisation", "off_span"):
        return f"{v:.3g}"
    if key in ("cm_gap", "monge_rel"):
        return f"{v:.4f}"
    if key == "reassigned":
        return f"{100 * v:.1f}%"
    return f"{v:.3f}"


def table(rows: list[dict]) -> str:
    """Markdown table of one case's rows."""
    head = (
        "| method | ICA-KS | radius-KS | C2ST | energy | var-ratio | out-of-range | memo "
        "| off-span | CM gap | reassigned | Monge gap (rel) | fit s | sample s |"
    )
    lines = [head, "|" + "---|" * 14]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['method']} | {r['error']} |" + " |" * 12)
            continue
        cells = [_fmt(r[k], k) for k in SCORES]
        cells += [_fmt(r[k], k) if k in r else "–" for k in GAPS]
        lines.append(
            f"| {r['method']} | "
            + " | ".join(cells)
            + f" | {r['fit_s']:.1f} | {r['sample_s']:.1f} |"
        )
    return "\n".join(lines)


def run(
    cases: list[str],
    methods: dict[str, Fit],
    *,
    n_samples: int = 8192,
    seed: int = 0,
    gap_points: int = 2048,
    log: Callable[[str], None] = print,
    on_case: Callable[[dict[str, dict]], None] | None = None,
) -> dict[str, dict]:
    """Fits and scores every method on every case; returns ``{case: {"note", "dim", "rows"}}``.

    A method whose sample function carries its map (``sample.transport``) also gets the gaps
    of that map on ``gap_points`` N(0, I) draws (0 skips them).

    ``on_case``, if given, is called with the results so far after each case (the script writes
    its JSON there, so an interrupted run keeps its finished cases).
    """
    results = {}
    for name in cases:
        t0 = time.perf_counter()
        case = load_case(name)
        scorer = Scorer(case.train, case.test, case.ica, seed=seed)
        log(
            f"## {name} (d = {case.dim}): {case.note}; "
            f"data + scorer {time.perf_counter() - t0:.1f} s; rank {scorer.rank}; "
            f"ICA directions' excess kurtosis {np.round(scorer.ica_kurtosis, 1).tolist()}"
        )
        rows = []
        for mname, fit in methods.items():
            key = jax.random.key(seed)
            k_fit, k_sample = jax.random.split(key)
            try:
                t0 = time.perf_counter()
                sample = fit(k_fit, case.train)
                fit_s = time.perf_counter() - t0
                t0 = time.perf_counter()
                samples = np.asarray(sample(k_sample, n_samples))
                sample_s = time.perf_counter() - t0
            except ImportError as err:
                log(f"  {mname}: skipped ({err})")
                rows.append({"method": mname, "error": f"skipped: {err}"})
                continue
            t0 = time.perf_counter()
            row = {"method": mname, **scorer(samples), "fit_s": fit_s, "sample_s": sample_s}
            row["score_s"] = time.perf_counter() - t0
            if gap_points and hasattr(sample, "transport"):
                row |= map_gaps(sample.transport, case.dim, gap_points, seed)
            if hasattr(sample, "info"):
                row["info"] = sample.info
            rows.append(row)
            log(
                f"  {mname}: "
                + json.dumps({k: round(v, 4) for k, v in row.items() if isinstance(v, float)})
            )
        t0 = time.perf_counter()
        row = {"method": "real held-out", **scorer(case.floor), "fit_s": 0.0, "sample_s": 0.0}
        row["score_s"] = time.perf_counter() - t0
        rows.append(row)
        log(f"  real held-out: score {row['score_s']:.1f} s")
        log("\n" + table(rows) + "\n")
        results[name] = {"note": case.note, "dim": case.dim, "rank": scorer.rank, "rows": rows}
        if on_case is not None:
            on_case(results)
    return results


def map_gaps(transport, dim: int, n: int, seed: int = 0) -> dict[str, float]:
    """The gaps of ``transport`` (noise ``[n, d]`` → codes) on ``n`` N(0, I) draws (see the
    module docstring), with the time they took."""
    z = np.asarray(jax.random.normal(jax.random.key(seed + 7), (n, dim), jnp.float32))
    t0 = time.perf_counter()
    g = aeot.transport_gap_from_samples(z, np.asarray(transport(z), np.float32))
    return {
        "cm_gap": g.gap,
        "reassigned": g.reassigned,
        "monge_rel": g.monge_gap_relative,
        "monge_gap": g.monge_gap,
        "monge_epsilon": g.epsilon,
        "gap_s": time.perf_counter() - t0,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default="patches8,patches16,digits8,digits32,digits128")
    parser.add_argument("--methods", default="aeot,linear,rbig,flowjax,ott-entropic")
    parser.add_argument("--samples", type=int, default=8192)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--gap-points", type=int, default=2048, help="points of the maps' gaps (0: skip them)"
    )
    parser.add_argument(
        "--fit-kwargs", default="{}", help="JSON dict of keywords for the methods named aeot*"
    )
    parser.add_argument("--json", default=None, help="write the results to this JSON file")
    args = parser.parse_args(argv)
    cases = args.cases.split(",")
    for c in cases:
        if c not in CASES:
            parser.error(f"unknown case {c!r}; choose from {tuple(CASES)}")
    fit_kwargs = json.loads(args.fit_kwargs)
    methods = {}
    for m in args.methods.split(","):
        if m not in METHODS:
            parser.error(f"unknown method {m!r}; choose from {tuple(METHODS)}")
        methods[m] = (
            functools.partial(METHODS[m], **fit_kwargs) if m.startswith("aeot") else METHODS[m]
        )
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"{stamp} · {platform.processor() or platform.machine()} · jax {jax.__version__}")
    if fit_kwargs:
        print(f"aeot with fit keywords {fit_kwargs}")
    meta = {
        "date": stamp,
        "jax": jax.__version__,
        "fit_kwargs": fit_kwargs,
        "argv": sys.argv[1:] if argv is None else argv,
    }

    def write(results):
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"meta": meta, "cases": results}, f, indent=2)

    return run(
        cases,
        methods,
        n_samples=args.samples,
        seed=args.seed,
        gap_points=args.gap_points,
        on_case=write,
    )


if __name__ == "__main__":
    main()
