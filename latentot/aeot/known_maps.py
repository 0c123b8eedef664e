"""Known-map pairs: laws P = N(0, I) and Q = T*#P with the optimal map T* known exactly.

Each T* is the gradient of a convex function, so by Brenier's theorem it is the optimal map
for the squared Euclidean cost between P and its push-forward:

* ``"gaussian"`` (the W2GN protocol of Korotin et al. 2021): ``T*(x) = S^½ x`` with
  ``S = R diag(exp(linspace(log ½, log 2, d)))² Rᵀ`` and R a random rotation;
  ``φ(x) = ½ xᵀ S^½ x``.
* ``"clusters"``: ``T*(x) = x + β Wᵀ softmax(k W x)``, W ``[K, d]`` with K = 8 random unit rows;
  ``φ(x) = ½‖x‖² + (β / k) logsumexp(k W x)``. It splits the noise into K lobes pushed a
  distance β apart along the rows of W.
* ``"mixture"``: an anisotropic linear part plus two such terms at different scales,
  ``T*(x) = L x + β₁ W₁ᵀ softmax(k₁ W₁ x) + β₂ W₂ᵀ softmax(k₂ W₂ x)`` with L symmetric positive
  definite; φ is the sum of the three convex potentials.

Three families whose non-Gaussian part lives in a low-dimensional subspace (the
latents of real autoencoders have d = 128–512, with a few directions carrying the structure):

* ``"subspace"``: an anisotropic bulk, ``T*(x) = A x + 6 Wᵀ softmax(3 W x)`` with
  ``A = U diag(linspace(1.5, 3, 8)) Uᵀ + 0.3 (I − U Uᵀ)``, U ``[d, 8]`` an orthonormal basis of
  a random 8-dim subspace, and W 6 random unit rows inside it. The codes' covariance has 8
  eigenvalues of 2–9 (the clusters add to them) over a bulk of 0.09.
* ``"spiked"``: an isotropic bulk, ``T*(x) = x + 5 Wᵀ softmax(3 W x)`` with W 6 random unit
  rows (spanning a random 6-dim subspace): 6 eigenvalues of about 5–7 over a bulk of 1.
* ``"bimodal"``: ``T*(x) = (I − U Uᵀ) x + Σ_i (a u_i u_iᵀ x + β u_i tanh(k u_iᵀ x))`` with u_i
  the 4 orthonormal columns of U: along each u_i the law is that of ``a t + β tanh(k t)``,
  t ~ N(0, 1), which is bimodal with variance exactly 1, the bulk's. The codes' covariance is
  the identity, so principal components cannot find the u_i. ``β u tanh(k uᵀx)`` is
  ``β Wᵀ softmax(k W x)`` with ``W = [u; −u]``, the gradient of ``(β / k) log cosh(k uᵀx)``
  plus a constant; :func:`bimodal_directions` returns the u_i and :func:`marginal_ks` the
  benchmark's measure along them.

For ``dim`` below the subspace's size (8, 6 or 4) the subspace is all of R^dim.

:func:`l2_uvp` and :func:`covariance_error` are the benchmark's error measures.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "BIMODAL",
    "PAIRS",
    "KnownMap",
    "bimodal_directions",
    "covariance_error",
    "known_map",
    "l2_uvp",
    "marginal_ks",
]

PAIRS = ("gaussian", "clusters", "mixture", "subspace", "spiked", "bimodal")

#: The ``"bimodal"`` pair's law along each u_i: ``a t + β tanh(k t)``, t ~ N(0, 1), with
#: ``(a, β, k)`` below and ``count`` directions. β solves ``E[(a t + β tanh(k t))²] = 1`` (the
#: bulk's variance) for a = 0.3, k = 3; computed once with scipy (adaptive quadrature of the
#: variance over t ∈ [−12, 12], tolerance 1e-13, then ``brentq`` on β; the value is exact to
#: about 1e-15). Its density has modes at ±1.09 with height 0.77 and 0.14 at 0 (a standard
#: normal has 0.40 there). ``tests/aeot/test_known_maps.py`` checks the variance and the dip.
BIMODAL = {"count": 4, "a": 0.3, "beta": 0.8393581863286573, "k": 3.0}


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class KnownMap:
    """``T*(x) = L x + Σ_t β_t W_tᵀ softmax(k_t W_t x)``, the gradient of a convex function.

    Attributes:
      matrix: L ``[d, d]``, symmetric positive definite.
      directions: the W_t, a tuple of ``[K_t, d]`` arrays.
      heights: the β_t ≥ 0 (tuple of floats).
      sharpness: the k_t > 0 (tuple of floats).
    """

    matrix: jax.Array
    directions: tuple = ()
    heights: tuple = dataclasses.field(default=(), metadata={"static": True})
    sharpness: tuple = dataclasses.field(default=(), metadata={"static": True})

    @property
    def dim(self) -> int:
        return self.matrix.shape[0]

    def transport(self, x: jax.Array) -> jax.Array:
        """T*(x): ``[..., d] → [..., d]``."""
        y = x @ self.matrix.astype(x.dtype)
        for w, beta, k in zip(self.directions, self.heights, self.sharpness, strict=True):
            w = w.astype(x.dtype)
            p = jax.nn.softmax(jnp.asarray(k, x.dtype) * (x @ w.T), axis=-1)
            y = y + jnp.asarray(beta, x.dtype) * (p @ w)
        return y

    def sample(self, rng: jax.Array, n: int, dtype=jnp.float32) -> tuple[jax.Array, jax.Array]:
        """``(x, T*(x))`` for ``n`` fresh ``x ~ N(0, I)``, both ``[n, d]``."""
        x = jax.random.normal(rng, (n, self.dim), dtype)
        return x, self.transport(x)


def _rotation(rng, d):
    q, r = np.linalg.qr(np.asarray(jax.random.normal(rng, (d, d), jnp.float32), np.float64))
    return q * np.sign(np.diag(r))[None, :]


def _unit_rows(rng, k, d):
    w = np.asarray(jax.random.normal(rng, (k, d), jnp.float32), np.float64)
    return w / np.linalg.norm(w, axis=1, keepdims=True)


def _subspace_basis(rng, d, k):
    """An orthonormal basis ``[d, k]`` of a random k-dim subspace of R^d."""
    return _rotation(rng, d)[:, :k]


def _new_pair(kind, dim, rng) -> KnownMap:
    """The subspace families (``"subspace"``, ``"spiked"``, ``"bimodal"``)."""
    k1, k2 = jax.random.split(jax.random.fold_in(rng, 20))
    if kind == "subspace":
        r = min(8, dim)
        u = _subspace_basis(k1, dim, r)
        s = np.linspace(1.5, 3.0, r)
        a = (u * s[None, :]) @ u.T + 0.3 * (np.eye(dim) - u @ u.T)
        w = _unit_rows(k2, 6, r) @ u.T  # unit rows inside the subspace
        return KnownMap(jnp.asarray(a, jnp.float32), (jnp.asarray(w, jnp.float32),), (6.0,), (3.0,))
    if kind == "spiked":
        w = _unit_rows(k1, 6, dim)
        return KnownMap(jnp.eye(dim), (jnp.asarray(w, jnp.float32),), (5.0,), (3.0,))
    c = min(BIMODAL["count"], dim)
    u = _subspace_basis(k1, dim, c)
    a = np.eye(dim) - (1.0 - BIMODAL["a"]) * (u @ u.T)
    ws = tuple(jnp.asarray(np.stack([u[:, i], -u[:, i]]), jnp.float32) for i in range(c))
    return KnownMap(jnp.asarray(a, jnp.float32), ws, (BIMODAL["beta"],) * c, (BIMODAL["k"],) * c)


def known_map(rng: jax.Array, kind: str, dim: int) -> KnownMap:
    """The known-map pair ``kind`` (one of :data:`PAIRS`) in dimension ``dim``.

    Raises:
      ValueError: unknown ``kind`` or ``dim < 1``.
    """
    if kind not in PAIRS:
        raise ValueError(f"kind must be one of {PAIRS}, got {kind!r}")
    if not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be a positive integer, got {dim!r}")
    if kind in ("subspace", "spiked", "bimodal"):
        return _new_pair(kind, dim, rng)
    k1, k2, k3, k4 = jax.random.split(rng, 4)
    if kind == "gaussian":
        r = _rotation(k1, dim)
        s = np.exp(np.linspace(math.log(0.5), math.log(2.0), dim))
        return KnownMap(jnp.asarray((r * s[None, :]) @ r.T, jnp.float32))
    if kind == "clusters":
        w = _unit_rows(k1, 8, dim)
        return KnownMap(jnp.eye(dim), (jnp.asarray(w, jnp.float32),), (4.0,), (4.0,))
    r = _rotation(k2, dim)
    s = np.exp(np.linspace(math.log(0.7), math.log(1.4), dim))
    w1 = _unit_rows(k3, 4, dim)
    w2 = _unit_rows(k4, 16, dim)
    return KnownMap(
        jnp.asarray((r * s[None, :]) @ r.T, jnp.float32),
        (jnp.asarray(w1, jnp.float32), jnp.asarray(w2, jnp.float32)),
        (5.0, 1.5),
        (3.0, 6.0),
    )


def l2_uvp(predicted, true, target) -> float:
    """L2-UVP (Korotin et al. 2021): ``100 · mean‖T̂(x) − T*(x)‖² / Var(Q)``.

    Args:
      predicted: T̂(x) ``[n, d]``.
      true: T*(x) ``[n, d]``.
      target: samples of Q ``[N, d]`` for Var(Q) = E‖y − E y‖².
    """
    p, t, q = (np.asarray(a, np.float64) for a in (predicted, true, target))
    var = np.sum(np.var(q, axis=0))
    return float(100.0 * np.mean(np.sum((p - t) ** 2, axis=1)) / var)


def covariance_error(samples, reference) -> float:
    """``‖Cov(samples) − Cov(reference)‖_F / ‖Cov(reference)‖_F``."""
    a = np.cov(np.asarray(samples, np.float64), rowvar=False)
    b = np.cov(np.asarray(reference, np.float64), rowvar=False)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def bimodal_directions(pair: KnownMap) -> np.ndarray:
    """The u_i ``[c, d]`` of a ``"bimodal"`` pair: the first rows of its ``[u; −u]`` terms."""
    rows = [np.asarray(w[0]) for w in pair.directions if w.shape[0] == 2]
    return np.stack(rows) if rows else np.zeros((0, pair.dim), np.float32)


def _ks_2samp(a, b) -> float:
    """The two-sample Kolmogorov–Smirnov statistic ``sup |F_a − F_b|``."""
    a, b = np.sort(np.asarray(a, np.float64)), np.sort(np.asarray(b, np.float64))
    grid = np.concatenate([a, b])
    fa = np.searchsorted(a, grid, side="right") / a.size
    fb = np.searchsorted(b, grid, side="right") / b.size
    return float(np.max(np.abs(fa - fb)))


def marginal_ks(samples, codes, directions) -> float:
    """Mean over the rows u of ``directions`` of the two-sample KS statistic between the
    samples' and the codes' marginals along u (0: equal laws; at 20,000 against 20,000 points
    the sampling error alone measures about 0.009)."""
    s, c, u = (np.asarray(v, np.float64) for v in (samples, codes, directions))
    return float(np.mean([_ks_2samp(s @ v, c @ v) for v in u]))
