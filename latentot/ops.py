"""The raw latent operations of Agustsson et al. (Table 1 of the paper).

Each one is a linear combination y = Σ_k w_k z_k of latent points, so its output's component law
differs from the prior's; :mod:`latentot.matching` gives the distribution-matched versions.

Shapes: the last axis is the latent dimension ``d``; leading axes broadcast. Coefficients
(``t``, ``eps``) broadcast against the leading axes, so ``lerp(z0, z1, ts[:, None])`` with
``ts`` of shape ``[n]`` and ``z0, z1`` of shape ``[m, d]`` gives ``[n, m, d]``.

Every operation except :func:`slerp` is component-wise, so it works on latents of any shape
(image latents ``[B, C, H, W]`` included) unchanged: only ``t``'s broadcasting refers to the
last axis. For a vector of frames ``ts`` ``[T]`` between two image latents ``[C, H, W]``, vmap
over t (``jax.vmap(lambda t: lerp(z0, z1, t))(ts)``, ``[T, C, H, W]``) or pass
``ts[:, None, None]``. :func:`slerp` reduces over the latent (a norm and an angle): pass
``axis=(-3, -2, -1)`` for image latents.

Dtypes: bfloat16 and float16 latents are computed in float32 and returned in their own dtype
(:func:`latentot._promotion.half_in_float32`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from latentot import _checks
from latentot._promotion import half_in_float32

__all__ = [
    "analogy",
    "bilinear_weights",
    "combine",
    "grid",
    "lerp",
    "lerp_weights",
    "random_walk",
    "slerp",
    "vicinity",
    "vicinity_weights",
]


def lerp_weights(t) -> jax.Array:
    """Weights ``[..., 2]`` = (1 - t, t) of 2-point interpolation."""
    return jnp.stack([1 - t, t], axis=-1)


def vicinity_weights(eps) -> jax.Array:
    """Weights ``[..., 2]`` = (1, eps) of vicinity sampling z + eps · u."""
    return jnp.stack([jnp.ones_like(eps), eps], axis=-1)


def bilinear_weights(n: int, dtype=None) -> jax.Array:
    """Weights ``[n, n, 4]`` of the 4-point grid, corners ordered TL, TR, BL, BR.

    Row i runs top to bottom (v = i / (n - 1)), column j left to right (u = j / (n - 1)). The
    weights are concrete even under ``jax.jit`` (they depend on the static n only), so a matched
    grid builds one transport map per distinct weight vector.
    """
    n = _checks.check_positive_int("n", n, minimum=2)
    s = np.linspace(0.0, 1.0, n)
    v, u = s[:, None], s[None, :]
    w = np.stack([(1 - u) * (1 - v), u * (1 - v), (1 - u) * v, u * v], axis=-1)
    with jax.ensure_compile_time_eval():
        return jnp.asarray(w, dtype or jnp.result_type(float))


@half_in_float32("z0", "z1")
def lerp(z0, z1, t) -> jax.Array:
    """Linear interpolation (1 - t) z0 + t z1.

    Args:
      z0: ``[..., d]`` start point(s).
      z1: ``[..., d]`` end point(s).
      t: scalar or array broadcasting against the leading axes. A concrete t outside [0, 1]
        raises ``ValueError``; a traced one extrapolates.

    Returns:
      ``[..., d]``, the broadcast of the leading axes of z0, z1 and t.
    """
    (z0, z1), lead = _checks.same_latent(("z0", "z1"), (z0, z1))
    t = _checks.interpolation_t(t, lead, z0.dtype)[..., None]
    return (1 - t) * z0 + t * z1


@half_in_float32("z0", "z1")
def slerp(z0, z1, t, *, axis=-1) -> jax.Array:
    """Spherical linear interpolation (Shoemake; White 2016).

    sin((1-t)Ω)/sin Ω · z0 + sin(tΩ)/sin Ω · z1, with Ω the angle between z0 and z1 over the
    latent axes ``axis``. When the points are (nearly) parallel or antipodal, or one is zero,
    sin Ω vanishes and the formula becomes lerp, which is also its limit for Ω → 0.

    Args:
      z0: ``[..., d]`` start point(s), or any shape with the latent axes given by ``axis``.
      z1: the end point(s), with the same latent axes as z0.
      t: scalar or array broadcasting against the axes not in ``axis`` (the leading axes), as in
        :func:`lerp`. For image latents: one pair ``[C, H, W]`` with ``axis=(-3, -2, -1)`` and
        frames ``ts`` ``[T]`` give ``[T, C, H, W]``; a batch ``[B, C, H, W]`` with
        ``axis=(1, 2, 3)`` takes one t per pair as ``t`` ``[B]``, or every frame for every pair
        as ``ts[:, None]`` ``[T, 1]`` (``[T, B, C, H, W]``).
      axis: the latent axes the norm and the angle are taken over (an int or a tuple; default
        the last axis). The result equals slerp of the latents flattened over these axes.

    Returns:
      The latents' shape broadcast with t's, e.g. ``[..., d]``.
    """
    (z0, z1), restore = _checks.flatten_latent(("z0", "z1"), (z0, z1), axis)
    return restore(_slerp(z0, z1, t))


def _slerp(z0, z1, t):
    """:func:`slerp` over the last axis."""
    (z0, z1), lead = _checks.same_latent(("z0", "z1"), (z0, z1))
    t = _checks.interpolation_t(t, lead, z0.dtype)[..., None]
    eps = jnp.finfo(z0.dtype).eps
    tiny = jnp.finfo(z0.dtype).tiny
    sq0 = jnp.sum(z0 * z0, -1, keepdims=True)
    sq1 = jnp.sum(z1 * z1, -1, keepdims=True)
    zero = (sq0 <= tiny) | (sq1 <= tiny)
    # Every branch is evaluated on safe values (the double-where idiom), so gradients stay finite.
    norms = jnp.sqrt(jnp.where(zero, 1, sq0 * sq1))
    cos = jnp.clip(jnp.sum(z0 * z1, -1, keepdims=True) / norms, -1, 1)
    degenerate = zero | (1 - cos * cos < eps)
    omega = jnp.arccos(jnp.where(degenerate, 0, cos))
    safe_sin = jnp.where(degenerate, 1, jnp.sin(omega))
    a = jnp.where(degenerate, 1 - t, jnp.sin((1 - t) * omega) / safe_sin)
    b = jnp.where(degenerate, t, jnp.sin(t * omega) / safe_sin)
    return a * z0 + b * z1


@half_in_float32("zs")
def combine(zs, weights) -> jax.Array:
    """The linear combination Σ_k weights[k] · zs[k] (n-point interpolation when Σ weights = 1).

    Args:
      zs: ``[k, ..., d]`` points.
      weights: ``[k]``.

    Returns:
      ``[..., d]``.
    """
    zs = _checks.as_float("zs", zs)
    if zs.ndim < 2:
        raise ValueError(f"zs must be [k, ..., d] with rank >= 2, got shape {zs.shape}")
    w = _checks.as_float("weights", weights)
    if w.shape != (zs.shape[0],):
        raise ValueError(
            f"weights must have shape [k] = ({zs.shape[0]},) to match zs {zs.shape}, got {w.shape}"
        )
    return jnp.tensordot(w.astype(zs.dtype), zs, axes=1)


def _corners(corners) -> jax.Array:
    c = _checks.as_float("corners", corners)
    if c.ndim < 2 or c.shape[0] != 4:
        raise ValueError(f"corners must be [4, ..., d] (TL, TR, BL, BR), got shape {c.shape}")
    return c


@half_in_float32("corners")
def grid(corners, n: int) -> jax.Array:
    """The 4-point bilinear grid between corners.

    Args:
      corners: ``[4, ..., d]``: top-left, top-right, bottom-left, bottom-right (leading axes
        ``...`` give a batch of grids).
      n: grid size (static int >= 2); the grid's corners equal ``corners``.

    Returns:
      ``[n, n, ..., d]``.
    """
    c = _corners(corners)
    w = bilinear_weights(n, c.dtype)
    return jnp.einsum("ijk,k...->ij...", w, c)


@half_in_float32("za", "zb", "zc")
def analogy(za, zb, zc) -> jax.Array:
    """The analogy zc + (zb - za): "za is to zb as zc is to ?"."""
    (za, zb, zc), _ = _checks.same_latent(("za", "zb", "zc"), (za, zb, zc))
    return zc + (zb - za)


@half_in_float32("z")
def vicinity(rng: jax.Array, prior, z, eps, num: int) -> jax.Array:
    """Vicinity sampling z + eps · u_j with u_j drawn from the prior.

    Args:
      rng: PRNG key.
      prior: the latent prior.
      z: ``[..., d]`` centre(s).
      eps: scalar >= 0 (a concrete negative eps raises ``ValueError``).
      num: number of samples (static int >= 1).

    Returns:
      ``[num, ..., d]``.
    """
    _checks.check_prior(prior)
    z = _checks.latent("z", z)
    num = _checks.check_positive_int("num", num)
    eps = _checks.step_size(eps, z.dtype)
    u = prior.sample(rng, (num, *z.shape), z.dtype)
    return z + eps * u


@half_in_float32("z0")
def random_walk(rng: jax.Array, prior, z0, eps, steps: int) -> jax.Array:
    """A random walk of repeated vicinity steps y_{k+1} = y_k + eps · u_k.

    Args:
      rng: PRNG key.
      prior: the latent prior.
      z0: ``[..., d]`` start.
      eps: scalar step size >= 0.
      steps: number of steps (static int >= 0).

    Returns:
      ``[steps + 1, ..., d]`` with row 0 equal to z0.
    """
    z0, eps, u = walk_increments(rng, prior, z0, eps, steps)
    walk = z0 + jnp.cumsum(eps * u, axis=0)
    return jnp.concatenate([z0[None], walk], axis=0)


def walk_increments(rng: jax.Array, prior, z0, eps, steps: int):
    """Validates a random walk's arguments and draws its steps' noise.

    Shared by the raw and the matched walk, so both see the same draws for the same ``rng``.

    Returns:
      ``(z0, eps, u)``: z0 as a float array ``[..., d]``, eps as a scalar of its dtype, and the
      prior draws u ``[steps, ..., d]``.
    """
    _checks.check_prior(prior)
    z0 = _checks.latent("z0", z0)
    steps = _checks.check_positive_int("steps", steps, minimum=0)
    eps = _checks.step_size(eps, z0.dtype)
    return z0, eps, prior.sample(rng, (steps, *z0.shape), z0.dtype)
