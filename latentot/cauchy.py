"""Leśniak et al.: interpolations carried through a Cauchy space.

A Cauchy variable is stable under convex combinations: Σ λ_i C_i ~ C for λ_i ≥ 0, Σ λ_i = 1.
So mapping each component to Cauchy space with g = F_C⁻¹ ∘ F_Z, interpolating linearly there,
and mapping back keeps any prior's law for every λ in [0, 1] (Cauchy-linear interpolation).
It is component-wise, so it works on latents of any shape; the spherical variant reduces over
the latent axes ``axis``. Half-precision latents are computed in float32.
The spherical variant keeps the law of an isotropic prior: it slerps the directions and
Cauchy-linear-interpolates the norms through the exact law of ‖z‖.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from latentot import _checks, ops
from latentot import priors as _priors
from latentot._promotion import half_in_float32
from latentot._sharding import elementwise
from latentot.priors import quantile_map

__all__ = ["cauchy_lerp", "from_cauchy", "spherical_cauchy_lerp", "to_cauchy"]

_C = _priors.Cauchy()


@half_in_float32("z")
def to_cauchy(prior, z) -> jax.Array:
    """g(z) = F_C⁻¹(F_Z(z)) component-wise: prior draws become standard Cauchy draws."""
    return elementwise(_to_cauchy, z, prior)


def _to_cauchy(prior, z):
    return quantile_map(_C, prior.cdf(z), _priors.sf(prior, z))


@half_in_float32("c")
def from_cauchy(prior, c) -> jax.Array:
    """g⁻¹(c) = F_Z⁻¹(F_C(c)) component-wise: standard Cauchy draws become prior draws."""
    return elementwise(_from_cauchy, c, prior)


def _from_cauchy(prior, c):
    return quantile_map(prior, _C.cdf(c), _C.sf(c))


@half_in_float32("z0", "z1")
def cauchy_lerp(prior, z0, z1, t) -> jax.Array:
    """Cauchy-linear interpolation g⁻¹((1 - t) g(z0) + t g(z1)), which keeps the prior's law.

    Args:
      prior: the latent prior (any prior of the protocol).
      z0: ``[..., d]``.
      z1: ``[..., d]``.
      t: scalar or array broadcasting against the leading axes; concrete values must lie in
        [0, 1]. A traced t outside [0, 1] extrapolates in Cauchy space, where the law is then no
        longer kept.

    Returns:
      ``[..., d]``; equals z0 at t = 0 and z1 at t = 1 up to the round trip of g.
    """
    _checks.check_prior(prior)
    (z0, z1), _ = _checks.same_latent(("z0", "z1"), (z0, z1))
    c = ops.lerp(to_cauchy(prior, z0), to_cauchy(prior, z1), t)
    return from_cauchy(prior, c).astype(z0.dtype)


@half_in_float32("z0", "z1")
def spherical_cauchy_lerp(prior, z0, z1, t, *, axis=-1) -> jax.Array:
    """Spherical Cauchy-linear interpolation for an isotropic prior (e.g. the Gaussian).

    Writes z - loc = r · e, slerps the directions e0, e1 and Cauchy-linear-interpolates the norms
    with ``h = F_C⁻¹ ∘ F_‖Z‖``, using the prior's exact norm law (for the Gaussian the chi
    law, ``F_‖Z‖(r) = P(d/2, r²/(2σ²))``). For i.i.d. isotropic inputs the output has the
    prior's law.

    Args:
      prior: an isotropic prior: it must provide ``norm_cdf(r, dim)`` and ``norm_icdf(u, dim)``
        and have a scalar ``scale``. Others raise ``ValueError``.
      z0: ``[..., d]``, or any shape with the latent axes given by ``axis``.
      z1: the end point(s), with the same latent axes as z0.
      t: as in :func:`cauchy_lerp`, broadcasting against the axes not in ``axis`` (see
        :func:`latentot.slerp` for image latents).
      axis: the latent axes the norm and the direction are taken over (an int or a tuple;
        default the last axis), e.g. ``(1, 2, 3)`` for ``[B, C, H, W]`` noise; d is the product
        of their sizes. The result equals the computation on the flattened latents.

    Returns:
      The latents' shape broadcast with t's, e.g. ``[..., d]``.
    """
    _checks.check_prior(prior)
    if not (
        callable(getattr(prior, "norm_cdf", None)) and callable(getattr(prior, "norm_icdf", None))
    ):
        raise ValueError(
            f"spherical_cauchy_lerp needs an isotropic prior with norm_cdf and norm_icdf; "
            f"{type(prior).__name__} has independent non-Gaussian components, so its law is not "
            "a function of the norm. Use cauchy_lerp instead."
        )
    if jnp.ndim(getattr(prior, "scale", 1.0)) != 0:
        raise ValueError("spherical_cauchy_lerp needs a scalar prior scale (an isotropic prior)")
    (z0, z1), restore = _checks.flatten_latent(("z0", "z1"), (z0, z1), axis)
    return restore(_spherical_cauchy_lerp(prior, z0, z1, t))


def _spherical_cauchy_lerp(prior, z0, z1, t):
    """:func:`spherical_cauchy_lerp` over the last axis."""
    (z0, z1), _ = _checks.same_latent(("z0", "z1"), (z0, z1))
    dim = z0.shape[-1]
    loc = jnp.asarray(getattr(prior, "loc", 0.0), z0.dtype)
    x0, x1 = z0 - loc, z1 - loc
    r0 = jnp.sqrt(jnp.sum(x0 * x0, -1))
    r1 = jnp.sqrt(jnp.sum(x1 * x1, -1))
    tiny = jnp.finfo(z0.dtype).tiny
    e0 = x0 / jnp.maximum(r0, tiny)[..., None]
    e1 = x1 / jnp.maximum(r1, tiny)[..., None]
    e = ops.slerp(e0, e1, t)
    e = e / jnp.maximum(jnp.sqrt(jnp.sum(e * e, -1, keepdims=True)), tiny)
    to_c = functools.partial(_norm_to_cauchy, dim=dim)
    rho = ops.lerp(
        elementwise(to_c, r0, prior)[..., None], elementwise(to_c, r1, prior)[..., None], t
    )
    r = elementwise(functools.partial(_norm_from_cauchy, dim=dim), rho[..., 0], prior)
    return (loc + r[..., None] * e).astype(z0.dtype)


def _norm_to_cauchy(prior, r, dim):
    sf = getattr(prior, "norm_sf", None)
    s = sf(r, dim) if callable(sf) else 1 - prior.norm_cdf(r, dim)
    return quantile_map(_C, prior.norm_cdf(r, dim), s)


def _norm_from_cauchy(prior, c, dim):
    f, s = _C.cdf(c), _C.sf(c)
    isf = getattr(prior, "norm_isf", None)
    tiny = jnp.finfo(f.dtype).tiny
    hi = isf(jnp.clip(s, tiny, 0.5), dim) if callable(isf) else prior.norm_icdf(1 - s, dim)
    return jnp.where(f <= s, prior.norm_icdf(jnp.clip(f, tiny, 0.5), dim), hi)
