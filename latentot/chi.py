"""The chi law: the exact law of ‖z‖ for a standard Gaussian vector z ∈ R^d.

‖z‖² ~ χ²_d, so F(r) = P(d/2, r²/2) with P the regularised lower incomplete gamma function.
A leaf module (it imports only the infrastructure: :mod:`latentot._checks`,
:mod:`latentot._promotion`): the Gaussian prior's ``norm_cdf`` etc. and the diagnostics both build
on it. Half-precision arguments are computed in float32 and returned in their own dtype.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.scipy import special

from latentot import _checks
from latentot._promotion import half_in_float32

__all__ = ["chi_cdf", "chi_icdf", "chi_isf", "chi_sf"]


@half_in_float32("r")
def chi_cdf(r, dim: int):
    """CDF of the chi law with ``dim`` degrees of freedom, P(dim/2, r²/2)."""
    dim = _checks.check_positive_int("dim", dim)
    x = jnp.maximum(_checks.as_float("r", r), 0)
    return special.gammainc(dim / 2, x * x / 2)


@half_in_float32("r")
def chi_sf(r, dim: int):
    """Survival function of the chi law, Q(dim/2, r²/2), accurate in the upper tail."""
    dim = _checks.check_positive_int("dim", dim)
    x = jnp.maximum(_checks.as_float("r", r), 0)
    return special.gammaincc(dim / 2, x * x / 2)


@half_in_float32("u")
def chi_icdf(u, dim: int, *, iterations: int = 30):
    """Quantile of the chi law with ``dim`` degrees of freedom (0 maps to 0, 1 to inf).

    Args:
      u: probabilities, any shape.
      dim: degrees of freedom (the latent dimension).
      iterations: Newton steps.

    Returns:
      r with the shape of ``u``.
    """
    dim = _checks.check_positive_int("dim", dim)
    u = _checks.as_float("u", u)
    r = _chi_quantile(u, 1 - u, dim, iterations)
    r = jnp.where(u <= 0, 0.0, r)
    return jnp.where(u >= 1, jnp.inf, r).astype(u.dtype)


@half_in_float32("q")
def chi_isf(q, dim: int, *, iterations: int = 30):
    """Inverse survival function of the chi law: the r with P(‖z‖ > r) = q, exact for small q."""
    dim = _checks.check_positive_int("dim", dim)
    q = _checks.as_float("q", q)
    r = _chi_quantile(1 - q, q, dim, iterations)
    r = jnp.where(q >= 1, 0.0, r)
    return jnp.where(q <= 0, jnp.inf, r).astype(q.dtype)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _chi_quantile(f, s, dim, iterations):
    """The chi quantile of a probability given as CDF value ``f`` and survival value ``s``.

    Newton's method on x = log(r²/2) for log P(a, e^x) = log f in the lower half and
    log Q(a, e^x) = log s in the upper half (a = dim/2), started from the Wilson-Hilferty
    approximation; both are monotone and concave in x, so the iteration converges from there.
    """
    a = dim / 2
    tiny = jnp.finfo(f.dtype).tiny
    upper = f > 0.5
    p = jnp.clip(jnp.where(upper, s, f), tiny, 0.5)
    # Wilson-Hilferty start for the chi-square quantile, then s = log(chi2 / 2).
    z = jnp.where(upper, -special.ndtri(p), special.ndtri(p))
    c = 2 / (9 * dim)
    chi2 = dim * jnp.maximum(1 - c + z * jnp.sqrt(c), 0.05) ** 3
    s = jnp.log(chi2 / 2)
    target = jnp.log(p)
    lgam = special.gammaln(a)

    def step(_, s):
        y = jnp.exp(s)
        tail = jnp.where(upper, special.gammaincc(a, y), special.gammainc(a, y))
        tail = jnp.maximum(tail, tiny)
        # d/ds log P = y · y^{a-1} e^{-y} / Γ(a) / P; for Q the sign flips.
        dlog = jnp.exp(a * s - y - lgam) / tail
        dlog = jnp.where(upper, -dlog, dlog)
        delta = (jnp.log(tail) - target) / jnp.where(dlog == 0, 1, dlog)
        return s - jnp.clip(delta, -2.0, 2.0)

    s = jax.lax.fori_loop(0, iterations, step, s)
    return jnp.sqrt(2 * jnp.exp(s))
