"""Distribution-matched latent operations (Agustsson et al.).

Each matched operation computes the raw operation y = Σ_k w_k z_k of :mod:`latentot.ops` and
applies the monotone transport map T = F_Z⁻¹ ∘ F_Y of :mod:`latentot.transport` component-wise.
When the inputs are independent draws from the prior, the output has exactly the prior's law.

The signatures are those of the raw operations with the prior first (after ``rng`` for the random
ones). The map is built once per weight vector, so it costs the same for one point or a million.
Traced ``t`` or ``eps`` are not range-checked: a t outside [0, 1] extrapolates, and the result is
then the matched version of that (extrapolating) weight vector.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from latentot import _checks, ops
from latentot._sharding import apply_map
from latentot.transport import transport_map

__all__ = [
    "matched_analogy",
    "matched_combine",
    "matched_grid",
    "matched_lerp",
    "matched_random_walk",
    "matched_vicinity",
]


def matched_lerp(prior, z0, z1, t, **map_kwargs) -> jax.Array:
    """Matched 2-point interpolation T_t((1 - t) z0 + t z1).

    Gaussian: y / √((1-t)² + t²); Cauchy: the identity for t in [0, 1]; uniform: the
    trapezoid-CDF closed form; other priors: the numerical map. At t = 0 and 1 it returns z0
    and z1.

    Args:
      prior: the latent prior.
      z0: ``[..., d]``.
      z1: ``[..., d]``.
      t: scalar or array broadcasting against the leading axes (one map per value of t).
      **map_kwargs: passed to :func:`latentot.transport_map` (``method``, ``num_grid``, ``order``).

    Returns:
      ``[..., d]``.
    """
    _checks.check_prior(prior)
    y = ops.lerp(z0, z1, t)
    t = _checks.as_float("t", t).astype(y.dtype)
    return apply_map(transport_map(prior, ops.lerp_weights(t), **map_kwargs), y)


def matched_combine(prior, zs, weights, **map_kwargs) -> jax.Array:
    """Matched linear combination, e.g. n-point interpolation with Σ weights = 1.

    Args:
      prior: the latent prior.
      zs: ``[k, ..., d]``.
      weights: ``[k]``, not all zero.
      **map_kwargs: passed to :func:`latentot.transport_map`.

    Returns:
      ``[..., d]``.
    """
    _checks.check_prior(prior)
    y = ops.combine(zs, weights)
    w = _checks.as_float("weights", weights).astype(y.dtype)
    return apply_map(transport_map(prior, w, **map_kwargs), y)


def matched_grid(prior, corners, n: int, **map_kwargs) -> jax.Array:
    """Matched 4-point bilinear grid; its corners equal ``corners``.

    Args:
      prior: the latent prior.
      corners: ``[4, d]``, ordered top-left, top-right, bottom-left, bottom-right.
      n: grid size (static int >= 2).
      **map_kwargs: passed to :func:`latentot.transport_map`.

    Returns:
      ``[n, n, d]``.
    """
    _checks.check_prior(prior)
    y = ops.grid(corners, n)
    return apply_map(transport_map(prior, ops.bilinear_weights(n, y.dtype), **map_kwargs), y)


def matched_analogy(prior, za, zb, zc, **map_kwargs) -> jax.Array:
    """Matched analogy T(zc + zb - za); Gaussian: loc + (y - loc)/√3, Cauchy: /3.

    Args:
      prior: the latent prior.
      za: ``[..., d]``.
      zb: ``[..., d]``.
      zc: ``[..., d]``.
      **map_kwargs: passed to :func:`latentot.transport_map`.

    Returns:
      ``[..., d]``.
    """
    _checks.check_prior(prior)
    y = ops.analogy(za, zb, zc)
    w = jnp.asarray([-1.0, 1.0, 1.0], y.dtype)
    return apply_map(transport_map(prior, w, **map_kwargs), y)


def matched_vicinity(rng: jax.Array, prior, z, eps, num: int, **map_kwargs) -> jax.Array:
    """Matched vicinity sampling T(z + eps · u_j), u_j drawn from the prior.

    Uses the same draws as :func:`latentot.vicinity` with the same ``rng``.

    Args:
      rng: PRNG key.
      prior: the latent prior.
      z: ``[..., d]`` centre(s), assumed drawn from the prior.
      eps: scalar >= 0; may be traced (vmap over it for a sweep).
      num: samples per centre (static int >= 1).
      **map_kwargs: passed to :func:`latentot.transport_map`.

    Returns:
      ``[num, ..., d]``.
    """
    y = ops.vicinity(rng, prior, z, eps, num)
    eps = _checks.step_size(eps, y.dtype)
    return apply_map(transport_map(prior, ops.vicinity_weights(eps), **map_kwargs), y)


def matched_random_walk(rng: jax.Array, prior, z0, eps, steps: int, **map_kwargs) -> jax.Array:
    """A random walk of matched vicinity steps y_{k+1} = T(y_k + eps · u_k), via ``lax.scan``.

    Every y_k has the prior's law when z0 does. Uses the same draws u_k as
    :func:`latentot.random_walk` with the same ``rng``.

    Args:
      rng: PRNG key.
      prior: the latent prior.
      z0: ``[..., d]`` start.
      eps: scalar step size >= 0; may be traced.
      steps: number of steps (static int >= 0).
      **map_kwargs: passed to :func:`latentot.transport_map`.

    Returns:
      ``[steps + 1, ..., d]`` with row 0 equal to z0.
    """
    z0, eps, u = ops.walk_increments(rng, prior, z0, eps, steps)
    T = transport_map(prior, ops.vicinity_weights(eps), **map_kwargs)

    def step(y, u_k):
        y = apply_map(T, y + eps * u_k)
        return y, y

    _, walk = jax.lax.scan(step, z0, u)
    return jnp.concatenate([z0[None], walk], axis=0)
