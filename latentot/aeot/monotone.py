"""Increasing piecewise-linear maps of one variable: the one-dimensional optimal maps.

On the line the optimal map between two laws for any convex cost is the monotone rearrangement
``T = F_Q⁻¹ ∘ F_P``. :class:`MonotoneMap` tabulates m such maps at once (one per column of its
input) on K knots each, ``x_k ↦ y_k`` with both rows strictly increasing, interpolates linearly
between knots and extrapolates linearly beyond the outer knots with the mean slope of the
outermost :data:`TAIL_KNOTS` segments, so it is finite, increasing and exactly invertible on the
whole line. :func:`quantile_map` builds it from samples of the two laws.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from scipy import special

__all__ = [
    "MonotoneMap",
    "identity_map",
    "quantile_map",
    "sample_quantiles",
    "strictly_increasing",
]

#: Segments averaged for the slope of the linear extrapolation beyond the outer knots.
TAIL_KNOTS = 4

#: The extrapolation slope is at most this multiple of the mean slope over the knots' range:
#: beyond the data, a heavy tail is continued, but a chain of maps does not amplify outliers
#: without bound.
TAIL_SLOPE_CAP = 1.0

#: ... and at least the mean slope divided by this: beyond a light tail (a bounded code, a
#: pixel at its clipping value) the inverse map's slope is the reciprocal, and a code just past
#: the outer knot must not be sent to a noise value of hundreds, which would then dominate
#: every moment fitted after it.
TAIL_SLOPE_FLOOR = 8.0


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class MonotoneMap:
    """m increasing piecewise-linear maps, one per column.

    Attributes:
      x: ``[m, K]`` knots of the input, strictly increasing along K.
      y: ``[m, K]`` values at the knots, strictly increasing along K.
    """

    x: jax.Array
    y: jax.Array

    def __call__(self, u: jax.Array) -> jax.Array:
        """Applies map j to column j: ``[..., m] → [..., m]``."""
        lo, hi = _tail_slopes(self.x, self.y)
        return _interp(u, self.x, self.y, lo, hi)

    def inverse(self, v: jax.Array) -> jax.Array:
        """The inverse maps: ``[..., m] → [..., m]``."""
        lo, hi = _tail_slopes(self.x, self.y)
        return _interp(v, self.y, self.x, 1.0 / lo, 1.0 / hi)


def _tail_slopes(x, y):
    """Slopes ``[m]`` below and above the knots: the outermost segments' mean slope, clipped to
    [1 / :data:`TAIL_SLOPE_FLOOR`, :data:`TAIL_SLOPE_CAP`] times the mean slope over the knots'
    range."""
    t = TAIL_KNOTS
    typical = (y[:, -1] - y[:, 0]) / (x[:, -1] - x[:, 0])
    low, high = typical / TAIL_SLOPE_FLOOR, TAIL_SLOPE_CAP * typical
    lo = jnp.clip((y[:, t] - y[:, 0]) / (x[:, t] - x[:, 0]), low, high)
    hi = jnp.clip((y[:, -1] - y[:, -1 - t]) / (x[:, -1] - x[:, -1 - t]), low, high)
    return lo, hi


def _interp(u, xp, fp, lo, hi):
    if u.shape[-1] != xp.shape[0]:
        raise ValueError(f"expected [..., {xp.shape[0]}] input, got shape {u.shape}")
    xp, fp, lo, hi = (a.astype(u.dtype) for a in (xp, fp, lo, hi))

    def one(uj, xj, fj, lo, hi):
        v = jnp.interp(uj, xj, fj)
        v = jnp.where(uj < xj[0], fj[0] + (uj - xj[0]) * lo, v)
        return jnp.where(uj > xj[-1], fj[-1] + (uj - xj[-1]) * hi, v)

    flat = u.reshape(-1, u.shape[-1])
    return jax.vmap(one, in_axes=(1, 0, 0, 0, 0), out_axes=1)(flat, xp, fp, lo, hi).reshape(u.shape)


def strictly_increasing(q: np.ndarray) -> np.ndarray:
    """Rows made strictly increasing (ties, e.g. of quantised data, spread by a tiny ramp)."""
    q = np.maximum.accumulate(q, axis=-1)
    span = np.maximum(q[..., -1:] - q[..., :1], 1e-30)
    return q + span * 1e-7 * np.arange(q.shape[-1])


def gaussian_knots(n: int, knots: int) -> np.ndarray:
    """``[K]`` standard-normal quantiles at levels spread evenly in z up to the level
    ``1 − 1/(n + 1)`` of the largest of ``n`` samples."""
    z_max = float(special.ndtri(1.0 - 1.0 / (n + 1.0)))
    return np.linspace(-z_max, z_max, knots)


def quantile_map(target: np.ndarray, source: np.ndarray | None = None, knots: int = 257):
    """The monotone rearrangement of each column's law onto ``target``'s.

    Args:
      target: ``[n, m]`` samples of the m target laws.
      source: ``[n', m]`` samples of the source laws, or ``None`` for N(0, 1) (exact quantiles).
      knots: K, the number of knots.

    Returns:
      A :class:`MonotoneMap` with knots at the source's quantiles of levels ``Φ(z)`` for z
      evenly spaced (:func:`gaussian_knots`), and values the target's quantiles at the same
      levels (float64 on the host, float32 in the map). The outer knots are the samples'
      minimum and maximum (the levels of the smallest and largest of n samples), so every
      sample lies within the knots and only new points are extrapolated.
    """
    target = np.asarray(target, np.float64)
    n = target.shape[0] if source is None else min(target.shape[0], len(source))
    z = gaussian_knots(n, knots)
    levels = special.ndtr(z)
    y = strictly_increasing(sample_quantiles(target, levels).T)
    if source is None:
        x = np.broadcast_to(z, y.shape)
    else:
        source = np.asarray(source, np.float64)
        x = strictly_increasing(sample_quantiles(source, levels).T)
    return MonotoneMap(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32))


def sample_quantiles(samples: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """``np.quantile(samples, levels, axis=0)`` ``[K, ...]`` with the outer levels (those of
    :func:`gaussian_knots`) at the samples' exact minimum and maximum."""
    q = np.quantile(samples, levels, axis=0)
    q[0], q[-1] = np.min(samples, axis=0), np.max(samples, axis=0)
    return q


def identity_map(m: int, knots: int = 8) -> MonotoneMap:
    """m identity maps."""
    z = np.broadcast_to(np.linspace(-8.0, 8.0, knots), (m, knots))
    return MonotoneMap(jnp.asarray(z, jnp.float32), jnp.asarray(z, jnp.float32))
