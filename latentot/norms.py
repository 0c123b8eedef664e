"""Laws of the Euclidean norm ‖z‖ of a latent vector with i.i.d. components.

* The exact chi law of a standard Gaussian vector: ‖z‖² ~ χ²_d, F(r) = P(d/2, r²/2), lives in
  :mod:`latentot.chi` (re-exported here).
* Leśniak et al., Observation 2.1: for components with E[Z²] = μ₂ and Var[Z²] = σ₂², ‖z‖ is
  approximately N(√(d μ₂), σ₂² / (4 μ₂)). For the Gaussian this gives variance 1/2 (the paper
  prints 1); for Uniform(-1, 1) it gives √(d/3) and 1/15.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from latentot import _checks, quadrature
from latentot._promotion import cast_back, compute_dtype
from latentot.chi import chi_cdf, chi_icdf, chi_isf, chi_sf

__all__ = ["chi_cdf", "chi_icdf", "chi_isf", "chi_sf", "norm_law"]


def norm_law(prior, dim: int, dtype=None) -> tuple[jax.Array, jax.Array]:
    """Leśniak's Observation 2.1: the normal approximation of ‖z‖, z ∈ R^dim i.i.d. from prior.

    The moments μ₂ = E[Z²] and μ₄ = E[Z⁴] come from quantile quadrature, so this works for any
    prior. The quadrature is repeated without the tails beyond u = 1e-12; if that changes μ₄ by
    more than 0.1%, the fourth moment is taken to diverge (Cauchy, Student-t with ν ≤ 4) and the
    result is ``(inf, inf)`` rather than a number that depends on where the tail was cut.

    Args:
      prior: the component prior.
      dim: latent dimension d.
      dtype: result dtype (default float; bfloat16 and float16 are computed in float32).

    Returns:
      ``(mean, variance)`` = (√(d μ₂), (μ₄ - μ₂²) / (4 μ₂)).
    """
    dim = _checks.check_positive_int("dim", dim)
    out_dtype = dtype or jnp.result_type(float)
    dtype = compute_dtype(out_dtype)  # half precision: the quadrature runs in float32

    def moments(q):
        q = jnp.clip(q, -1e9, 1e9)  # keeps q⁴ finite in float32; a real tail there diverges anyway
        return jnp.stack([q**2, q**4], -1)

    mu2, mu4 = quadrature.expectation(prior, moments, dtype)
    _, mu4_cut = quadrature.expectation(prior, moments, dtype, u_min=1e-12)
    heavy = ~(jnp.abs(mu4 - mu4_cut) <= 1e-3 * mu4)
    mean = jnp.where(heavy, jnp.inf, jnp.sqrt(dim * mu2))
    var = jnp.where(heavy, jnp.inf, (mu4 - mu2**2) / (4 * mu2))
    return cast_back(mean, out_dtype), cast_back(var, out_dtype)
