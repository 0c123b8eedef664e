"""Distribution-matched latent operations (Agustsson et al.).

Each matched operation computes the raw operation y = Σ_k w_k z_k of :mod:`latentot.ops` and
applies the monotone transport map T = F_Z⁻¹ ∘ F_Y of :mod:`latentot.transport` component-wise.
When the inputs are independent draws from the prior, the output has exactly the prior's law.

The signatures are those of the raw operations with the prior first (after ``rng`` for the random
ones). The map is built once per weight vector, so it costs the same for one point or a million.
Traced ``t`` or ``eps`` are not range-checked: a t outside [0, 1] extrapolates, and the result is
then the matched version of that (extrapolating) weight vector.

Codes of a learned law (an autoencoder's, an inverted generator's) are not prior draws. Every
matched operation also accepts, in the prior's place, a :class:`LatentMap`: an object with a
``prior``, a map ``transport`` from that prior's noise to codes and its inverse
``inverse_transport`` (:class:`latentot.aeot.Sampler` is one; a normalising flow can be
another). The operation is then done on the noise, ``T(matched_op(prior, T⁻¹(y₀), T⁻¹(y₁),
…))``: when the codes have T's law, so does the result. The random operations (vicinity, random
walk, subspace) draw in the noise, and ``eps`` is in the noise's units. Endpoints, grid corners
and keyframes come back as the given codes up to the round-trip error of ``inverse_transport``
(for a sampler, check it with ``sampler.inverse_transport(codes, return_info=True)``).
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np

from latentot import _checks, ops, splines
from latentot._promotion import half_in_float32
from latentot._sharding import apply_map
from latentot.transport import family_transport_map as transport_map_family
from latentot.transport import transport_map

__all__ = [
    "LatentMap",
    "matched_analogy",
    "matched_combine",
    "matched_grid",
    "matched_lerp",
    "matched_mean",
    "matched_random_walk",
    "matched_spline",
    "matched_subspace",
    "matched_vicinity",
]


@runtime_checkable
class LatentMap(Protocol):
    """A map T from a prior's noise to codes, with its inverse: a prior for codes.

    Attributes:
      prior: the noise prior (a :class:`latentot.priors.Prior`).

    ``transport(z)`` maps noise ``[..., d]`` to codes ``[..., d]`` and ``inverse_transport(y)``
    codes back to noise; both must be traceable (jit, vmap) and act on the last axis.
    :class:`latentot.aeot.Sampler` follows this protocol.
    """

    prior: Any

    def transport(self, z: jax.Array) -> jax.Array: ...

    def inverse_transport(self, codes: jax.Array) -> jax.Array: ...


def _through_latent_map(*latents: str):
    """Decorator: with a :class:`LatentMap` as ``prior``, the operation acts on the noise.

    The arguments named ``latents`` are mapped to noise by ``inverse_transport`` (all of them
    in one call: each code is inverted once, whatever the operation then makes of it), the
    operation runs with the map's prior, and its result is mapped back by ``transport``.
    """

    def wrap(fn):
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapped(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            latent_map = bound.arguments["prior"]
            if not isinstance(latent_map, LatentMap):
                return fn(*args, **kwargs)
            codes = [_checks.latent(name, bound.arguments[name]) for name in latents]
            for name, noise in zip(latents, _inverse_once(latent_map, codes), strict=True):
                bound.arguments[name] = noise
            bound.arguments["prior"] = latent_map.prior
            return latent_map.transport(fn(*bound.args, **bound.kwargs))

        return wrapped

    return wrap


def _inverse_once(latent_map, codes: list[jax.Array]) -> list[jax.Array]:
    """``inverse_transport`` of every array of ``codes`` ``[..., d]`` through one call on their
    rows stacked (one program and one pass over the map's tables); arrays of different last
    dimensions or dtypes are inverted one by one (the map reports their errors)."""
    if (
        len(codes) == 1
        or len({(c.shape[-1], c.dtype) for c in codes}) > 1
        or not codes[0].shape[-1]
    ):
        return [latent_map.inverse_transport(c) for c in codes]
    d = codes[0].shape[-1]
    flat = jnp.concatenate([c.reshape(-1, d) for c in codes])
    noise = latent_map.inverse_transport(flat)
    splits = np.cumsum([c.size // d for c in codes])[:-1]
    return [part.reshape(c.shape) for part, c in zip(jnp.split(noise, splits), codes, strict=True)]


@_through_latent_map("z0", "z1")
@half_in_float32("z0", "z1")
def matched_lerp(prior, z0, z1, t, **map_kwargs) -> jax.Array:
    """Matched 2-point interpolation T_t((1 - t) z0 + t z1).

    Gaussian: y / √((1-t)² + t²); Cauchy: the identity for t in [0, 1]; uniform: the
    trapezoid-CDF closed form; other priors: the numerical map. At t = 0 and 1 it returns z0
    and z1.

    Args:
      prior: the latent prior, or a :class:`LatentMap` (the latents are then its codes).
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


@_through_latent_map("zs")
@half_in_float32("zs")
def matched_combine(prior, zs, weights, **map_kwargs) -> jax.Array:
    """Matched linear combination, e.g. n-point interpolation with Σ weights = 1.

    Args:
      prior: the latent prior, or a :class:`LatentMap` (the latents are then its codes).
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


@_through_latent_map("corners")
@half_in_float32("corners")
def matched_grid(prior, corners, n: int, **map_kwargs) -> jax.Array:
    """Matched 4-point bilinear grid; its corners equal ``corners``.

    The n² weight vectors are concrete (they depend on n only), so the numerical map is built
    once per distinct multiset of weights (10 for n = 7), also under ``jax.jit``; with the
    prior's parameters concrete too, the tables are built while tracing (the compiled grid only
    looks them up) and cached for later grids with the same n (see
    :func:`latentot.transport_map`).

    Args:
      prior: the latent prior, or a :class:`LatentMap` (the latents are then its codes).
      corners: ``[4, ..., d]``, ordered top-left, top-right, bottom-left, bottom-right; leading
        axes ``...`` give a batch of grids sharing the maps.
      n: grid size (static int >= 2).
      **map_kwargs: passed to :func:`latentot.transport_map`.

    Returns:
      ``[n, n, ..., d]``.
    """
    _checks.check_prior(prior)
    y = ops.grid(corners, n)
    w = np.asarray(ops.bilinear_weights(n, y.dtype))  # concrete, so equal maps are shared
    return _map_frames(prior, w.reshape(n, n, *(1,) * (y.ndim - 3), 4), y, map_kwargs)


@_through_latent_map("keyframes")
@half_in_float32("keyframes")
def matched_spline(prior, keyframes, t, *, closed: bool = False, **map_kwargs) -> jax.Array:
    """The Catmull-Rom spline through keyframes, every frame mapped to the prior's law.

    Frame r is y_r = Σ_j c_rj P_{i_rj} (:func:`latentot.spline`), and the output is T_r(y_r)
    with T_r the transport map of its weights. A keyframe that enters a frame twice (the clamped
    ends of an open path, closed loops with K < 4) is counted once with its weights merged, as
    the law of y_r requires. When the keyframes are independent prior draws, every frame has the
    prior's law exactly, and frame t = i is keyframe i.

    Args:
      prior: the latent prior, or a :class:`LatentMap` (the latents are then its codes).
      keyframes: ``[K, ..., d]``, K >= 2.
      t: ``[T]``; as in :func:`latentot.spline`. Pass a concrete t (a NumPy array, even under
        ``jax.jit``) to build one map per distinct weight vector (a looping path with the same
        number of frames per segment repeats its weights every segment), once, while tracing.
        A traced t (a jit argument) is fast too wherever the tables can be built while
        tracing (a prior with concrete parameters, and ``method="fft"``, or ``"auto"`` for a
        light-tailed prior without a closed form):
        the tables of 129 nodes along each kind of segment are built once (and cached), and
        each frame's map is their cubic interpolant at its fraction of a segment
        (:func:`latentot.transport.family_transport_map`; within about 1e-4 of the frame's own
        table, exact at the keyframes). Otherwise a traced t builds one map per frame on
        every call.
      closed: loop with period K.
      **map_kwargs: passed to :func:`latentot.transport_map`.

    Returns:
      ``[T, ..., d]``.
    """
    _checks.check_prior(prior)
    kf, t = splines.check_keyframes(keyframes, t, closed)
    index, weight = splines.spline_weights(t, kf.shape[0], closed=closed)
    y = splines.combine_frames(kf, index, weight)
    weight = weight.astype(y.dtype)  # NumPy for a concrete t: equal maps are then shared
    w = weight.reshape(weight.shape[0], *(1,) * (y.ndim - 2), 4)
    if _checks.concrete(t) is None and set(map_kwargs) <= {"method", "num_grid"}:
        # A traced t: the frames' weights lie on a few concrete curves (one per kind of
        # segment), whose tables are built while tracing; each frame interpolates them.
        nodes, kind, pos = splines.spline_family(t, kf.shape[0], closed=closed)
        lead = (1,) * (y.ndim - 2)
        T = transport_map_family(
            prior, w, nodes, kind.reshape(-1, *lead), pos.reshape(-1, *lead), **map_kwargs
        )
        if T is not None:
            return apply_map(T, y)
    return _map_frames(prior, w, y, map_kwargs)


@_through_latent_map("zs")
@half_in_float32("zs")
def matched_mean(prior, zs, **map_kwargs) -> jax.Array:
    """The matched centroid T(Σ_k z_k / k) of k latents.

    Gaussian: loc + (ȳ - loc) √k; Cauchy: the plain mean; other priors: the numerical map of k
    equal weights. For k independent prior draws the result has the prior's law.

    Args:
      prior: the latent prior, or a :class:`LatentMap` (the latents are then its codes).
      zs: ``[k, ..., d]``, k >= 1.
      **map_kwargs: passed to :func:`latentot.transport_map`.

    Returns:
      ``[..., d]``.
    """
    zs = _checks.as_float("zs", zs)
    if zs.ndim < 2:
        raise ValueError(f"zs must be [k, ..., d] with rank >= 2, got shape {zs.shape}")
    k = zs.shape[0]
    return matched_combine(prior, zs, np.full(k, 1 / k, zs.dtype), **map_kwargs)


@_through_latent_map("zs")
@half_in_float32("zs")
def matched_subspace(
    rng: jax.Array, prior, zs, num: int, *, convex: bool = False, **map_kwargs
) -> jax.Array:
    """Random points of the span of k latents, each with the prior's law.

    Point n is T_{c_n}(Σ_k c_nk z_k) with its own coefficient vector c_n, shared by all of the
    latent's components (and by the leading axes ``...`` of ``zs``), and T_c the transport map
    of the weights c. The coefficients are i.i.d. standard normal, i.e. the direction c / ‖c‖ is
    uniform on the sphere of the span: the matched point depends on the direction only
    (T_{λc}(λy) = T_c(y) for λ > 0), so every direction of the span is equally likely. With
    ``convex=True`` they are Dirichlet(1, …, 1) instead: uniform on the simplex, i.e. points of
    the convex hull of the latents. For independent prior draws every point has the prior's law
    (different points are dependent: they share the latents).

    Args:
      rng: PRNG key.
      prior: the latent prior, or a :class:`LatentMap` (the latents are then its codes).
      zs: ``[k, ..., d]``, k >= 1, the latents spanning the subspace.
      num: number of points (static int >= 1).
      convex: draw convex combinations (Dirichlet) instead of the whole span (Gaussian).
      **map_kwargs: passed to :func:`latentot.transport_map`.

    Returns:
      ``[num, ..., d]``.
    """
    _checks.check_prior(prior)
    zs = _checks.as_float("zs", zs)
    if zs.ndim < 2:
        raise ValueError(f"zs must be [k, ..., d] with rank >= 2, got shape {zs.shape}")
    num = _checks.check_positive_int("num", num)
    k = zs.shape[0]
    if convex:
        c = jax.random.dirichlet(rng, jnp.ones(k, zs.dtype), (num,), zs.dtype)
    else:
        c = jax.random.normal(rng, (num, k), zs.dtype)
    y = jnp.einsum("nk,k...->n...", c, zs)
    return _map_frames(prior, c.reshape(num, *(1,) * (zs.ndim - 2), k), y, map_kwargs)


def _map_frames(prior, weights, y, map_kwargs):
    """Applies the maps of ``weights`` ``[*B, 1, ..., k]`` to ``y`` ``[*B, ..., d]``."""
    assert jnp.ndim(weights) == jnp.ndim(y), (jnp.shape(weights), jnp.shape(y))  # one map per *B
    return apply_map(transport_map(prior, weights, **map_kwargs), y)


@_through_latent_map("za", "zb", "zc")
@half_in_float32("za", "zb", "zc")
def matched_analogy(prior, za, zb, zc, **map_kwargs) -> jax.Array:
    """Matched analogy T(zc + zb - za); Gaussian: loc + (y - loc)/√3, Cauchy: /3.

    Args:
      prior: the latent prior, or a :class:`LatentMap` (the latents are then its codes).
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


@_through_latent_map("z")
@half_in_float32("z")
def matched_vicinity(rng: jax.Array, prior, z, eps, num: int, **map_kwargs) -> jax.Array:
    """Matched vicinity sampling T(z + eps · u_j), u_j drawn from the prior.

    Uses the same draws as :func:`latentot.vicinity` with the same ``rng``.

    Args:
      rng: PRNG key.
      prior: the latent prior, or a :class:`LatentMap` (the latents are then its codes).
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


@_through_latent_map("z0")
@half_in_float32("z0")
def matched_random_walk(rng: jax.Array, prior, z0, eps, steps: int, **map_kwargs) -> jax.Array:
    """A random walk of matched vicinity steps y_{k+1} = T(y_k + eps · u_k), via ``lax.scan``.

    Every y_k has the prior's law when z0 does. Uses the same draws u_k as
    :func:`latentot.random_walk` with the same ``rng``.

    Args:
      rng: PRNG key.
      prior: the latent prior, or a :class:`LatentMap` (the latents are then its codes).
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
