"""The closed-form Gaussian (Bures) map between the prior and the codes' first two moments.

Between Gaussians P = N(μ_P, s² I) and Q = N(μ_Q, Σ_Q) the optimal map for the squared
Euclidean cost is affine, ``T(z) = A z + b`` with ``A = Σ_Q^½ / s`` and ``b = μ_Q − A μ_P``; it is
the gradient of the convex quadratic ``½ zᵀ A z + bᵀ z``. For other laws with the same first two
moments it is the best affine map in the W2 sense up to the residual that AE-OT learns on top.

The prior's coordinates are i.i.d. by the library's convention, so its mean and standard
deviation per coordinate are enough. They are estimated on 2^16 draws with a fixed key, except
that a heavy-tailed prior (an estimated excess kurtosis above 20, e.g. Cauchy, which has no
variance) is scaled by its interquartile range, ``IQR / 1.349`` (the Gaussian's ratio).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["bures_map", "prior_moments", "sqrtm_psd"]

_MOMENT_DRAWS = 1 << 16


def sqrtm_psd(s: jax.Array) -> jax.Array:
    """The symmetric square root of a positive semi-definite matrix ``[d, d]`` (eigenvalues < 0
    from rounding are clipped to 0)."""
    w, v = jnp.linalg.eigh(s)
    w = jnp.sqrt(jnp.maximum(w, jnp.zeros_like(w)))
    return (v * w[None, :]) @ v.T


def prior_moments(prior: Any, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-coordinate location ``[d]`` and scale ``[d]`` of the prior (float64, host).

    Estimated on 2^16 draws with a fixed key (mean and standard deviation), or median and
    ``IQR / 1.349`` for a heavy-tailed prior; see the module docstring.
    """
    draws = np.asarray(prior.sample(jax.random.key(0), (_MOMENT_DRAWS, dim), jnp.float32))
    draws = draws.astype(np.float64)
    mean = draws.mean(axis=0)
    std = draws.std(axis=0)
    centred = draws - mean
    kurt = np.mean(centred**4, axis=0) / np.maximum(std**4, 1e-300) - 3.0
    heavy = ~np.isfinite(kurt) | (kurt > 20.0)
    if np.any(heavy):
        q1, q2, q3 = np.quantile(draws, [0.25, 0.5, 0.75], axis=0)
        mean = np.where(heavy, q2, mean)
        std = np.where(heavy, (q3 - q1) / 1.349, std)
    return mean, std


def bures_map(codes: jax.Array, prior: Any) -> tuple[jax.Array, jax.Array]:
    """The affine map ``z ↦ A z + b`` from the prior onto the codes' mean and covariance.

    Args:
      codes: ``[N, d]`` latent codes.
      prior: the noise prior (i.i.d. coordinates), see :func:`prior_moments`.

    Returns:
      ``(A, b)``: ``A`` ``[d, d]`` symmetric positive semi-definite and ``b`` ``[d]``, in the
      codes' dtype; with ``D = diag(scale)``, ``A = D⁻¹ (D Σ_Q D)^½ D⁻¹``, the optimal map
      from N(loc, D²) to N(μ_Q, Σ_Q). The codes' moments are computed on device (a sharded
      array is reduced in place).
    """
    dim = codes.shape[1]
    loc, scale = prior_moments(prior, dim)
    return _affine(codes, jnp.asarray(loc, codes.dtype), jnp.asarray(scale, codes.dtype))


@jax.jit
def _affine(codes: jax.Array, loc: jax.Array, scale: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``A = D⁻¹ (D Σ_Q D)^½ D⁻¹`` with ``D = diag(scale)``, and ``b = μ_Q − A loc``."""
    n = codes.shape[0]
    mean = jnp.mean(codes, axis=0)
    c = codes - mean
    cov = jnp.matmul(c.T, c, precision=jax.lax.Precision.HIGHEST) / jnp.asarray(n, codes.dtype)
    a = sqrtm_psd(scale[:, None] * cov * scale[None, :]) / (scale[:, None] * scale[None, :])
    a = 0.5 * (a + a.T)
    return a, mean - a @ loc
