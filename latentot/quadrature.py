"""Quadrature over a prior's quantiles: E[g(Z)] = ∫₀¹ g(F_Z⁻¹(u)) du.

Writing expectations in the probability variable u needs only the quantile function, so it works
for any prior, heavy tails included (g stays bounded where F_Z⁻¹ blows up). The two halves
u ∈ (0, 1/2] and 1 - u are handled separately, the upper one through the inverse survival
function, so both tails keep their precision in float32. In each half the substitution
u = e^{-x} / 2 turns the tail into the long range x ∈ [0, 69] (u down to 1e-30), which composite
Gauss-Legendre panels cover with nodes dense near the body and geometrically sparser outwards.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np

from latentot import priors as _priors

__all__ = ["expectation", "quantile_nodes"]

# Panel edges in x = -log(2u): width 1/4 in the body (u > 0.025), 1/2 through the tails down to
# u = 1e-9, then wider. Measured on the Cauchy and uniform closed forms (order 8): max map error
# 7e-6 on [-5, 5] and 3e-2 at |y| = 20 for a four-term Cauchy sum, against 1.5e-3 and 1e-1 with
# a coarser 36-panel rule at the same cost.
_EDGES = np.concatenate(
    [np.arange(0.0, 3.0, 0.25), np.arange(3.0, 20.0, 0.5), np.linspace(20, 69, 15)]
)


@functools.lru_cache(maxsize=8)
def _half_rule(order: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes u ∈ (0, 1/2) and weights (summing to 1/2) of the composite rule, in float64."""
    t, w = np.polynomial.legendre.leggauss(order)
    a, b = _EDGES[:-1, None], _EDGES[1:, None]
    x = (a + b) / 2 + (b - a) / 2 * t
    wx = (b - a) / 2 * w
    u = 0.5 * np.exp(-x)
    wu = wx * u  # du = u dx
    wu *= 0.5 / wu.sum()  # the truncated mass below u = 1e-30 is negligible; keep Σ exactly 1/2
    return u.ravel(), wu.ravel()


def quantile_nodes(
    prior, dtype, *, order: int = 8, u_min: float = 0.0
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Quantile nodes of ``prior`` and their probability weights.

    Args:
      prior: any prior (see :mod:`latentot.priors`).
      dtype: floating dtype of the result.
      order: Gauss-Legendre nodes per panel (60 panels per half).
      u_min: drop the nodes of both tails with u < u_min (a truncated rule, used to check that
        an expectation has converged).

    Returns:
      ``(q, w)``, both ``[2 · 60 · order]``: quantiles (lower half, then upper half) and weights
      summing to 1, so that ``E[g(Z)] ≈ Σ w · g(q)``.
    """
    u, wu = _half_rule(order)
    keep = u >= u_min
    u, wu = jnp.asarray(u[keep], dtype), wu[keep]
    q = jnp.concatenate([prior.icdf(u), _priors.isf(prior, u)]).astype(dtype)
    w = jnp.asarray(np.concatenate([wu, wu]), dtype)
    # A prior without isf computes icdf(1 - u), which is icdf(1) = inf once 1 - u rounds to 1
    # (u < 6e-8 in float32). Those nodes carry a negligible mass: drop them rather than let an
    # infinite node turn sums into NaN.
    finite = jnp.isfinite(q)
    return jnp.where(finite, q, 0), jnp.where(finite, w, 0)


def expectation(prior, g, dtype=None, *, order: int = 8, u_min: float = 0.0):
    """E[g(Z)] for Z ~ prior, by quantile quadrature; ``g`` maps ``[n]`` to ``[n, ...]``."""
    dtype = dtype or jnp.result_type(float)
    q, w = quantile_nodes(prior, dtype, order=order, u_min=u_min)
    return jnp.tensordot(w, g(q), axes=1)
