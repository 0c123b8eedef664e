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

:func:`l2_uvp` and :func:`covariance_error` are the benchmark's error measures.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["PAIRS", "KnownMap", "covariance_error", "known_map", "l2_uvp"]

PAIRS = ("gaussian", "clusters", "mixture")


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


def known_map(rng: jax.Array, kind: str, dim: int) -> KnownMap:
    """The known-map pair ``kind`` (one of :data:`PAIRS`) in dimension ``dim``.

    Raises:
      ValueError: unknown ``kind`` or ``dim < 1``.
    """
    if kind not in PAIRS:
        raise ValueError(f"kind must be one of {PAIRS}, got {kind!r}")
    if not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be a positive integer, got {dim!r}")
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
