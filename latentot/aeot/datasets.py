"""Toy latent datasets and the metrics of the AE-OT reproductions."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = [
    "eight_gaussian_centres",
    "eight_gaussians",
    "eight_gaussians_report",
    "w2_exact",
]


def eight_gaussian_centres(radius: float = 10.0) -> np.ndarray:
    """The 8 compass-direction centres at ``radius`` (paper §4.1), ``[8, 2]`` float64."""
    angles = np.arange(8) * (math.pi / 4)
    return radius * np.stack([np.cos(angles), np.sin(angles)], axis=-1)


def eight_gaussians(
    rng: jax.Array, n: int, *, radius: float = 10.0, sigma: float = 1.0, dtype=None
) -> jax.Array:
    """``n`` points ``[n, 2]`` from the equal mixture of N(centre, σ² I) over the 8 centres."""
    k_c, k_z = jax.random.split(rng)
    dtype = dtype if dtype is not None else jnp.result_type(float)
    centres = jnp.asarray(eight_gaussian_centres(radius), dtype)
    which = jax.random.randint(k_c, (n,), 0, 8)
    return centres[which] + jnp.asarray(sigma, dtype) * jax.random.normal(k_z, (n, 2), dtype)


def w2_exact(a, b) -> float:
    """W2 between two equal-size point clouds ``[n, d]`` with an exact assignment (scipy)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"a and b must have the same shape [n, d], got {a.shape} and {b.shape}")
    cost = np.sum((a[:, None, :] - b[None, :, :]) ** 2, axis=-1)
    rows, cols = linear_sum_assignment(cost)
    return float(np.sqrt(cost[rows, cols].mean()))


def eight_gaussians_report(
    rng: jax.Array, samples, *, radius: float = 10.0, sigma: float = 1.0, n_w2: int = 1000
) -> dict:
    """The eight-Gaussians metrics of the reproduction.

    Args:
      rng: key for the fresh data sets of the W2 comparison.
      samples: generated points ``[n, 2]``, ``n >= n_w2``.
      radius, sigma: the mixture.
      n_w2: points per cloud in the W2 comparison.

    Returns:
      A dict with ``within_3sigma`` (fraction of samples within 3σ of a centre),
      ``centre_fractions`` ``[8]`` (fraction of samples nearest each centre),
      ``w2`` = W2(samples[:n_w2], fresh data), ``w2_data`` = W2(fresh data, fresh data) and
      ``w2_ratio`` = w2 / w2_data.
    """
    s = np.asarray(samples, np.float64)
    centres = eight_gaussian_centres(radius)
    dist = np.linalg.norm(s[:, None, :] - centres[None], axis=-1)
    nearest = np.argmin(dist, axis=1)
    within = float(np.mean(dist.min(axis=1) <= 3 * sigma))
    fractions = np.bincount(nearest, minlength=8) / len(s)
    k1, k2 = jax.random.split(rng)
    d1 = eight_gaussians(k1, n_w2, radius=radius, sigma=sigma, dtype=jnp.float32)
    d2 = eight_gaussians(k2, n_w2, radius=radius, sigma=sigma, dtype=jnp.float32)
    w2 = w2_exact(s[:n_w2], d1)
    w2_data = w2_exact(d2, d1)
    return {
        "within_3sigma": within,
        "centre_fractions": fractions,
        "w2": w2,
        "w2_data": w2_data,
        "w2_ratio": w2 / w2_data,
    }
