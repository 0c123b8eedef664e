"""Keyframe paths: the uniform Catmull-Rom spline through latent keyframes.

A frame at parameter t is a linear combination of the (at most) four keyframes around it,

    C(t) = Σ_j c_j(s) P_{i - 1 + j},    i = ⌊t⌋, s = t - i,

    c(s) = ½ (-s³ + 2s² - s,  3s³ - 5s² + 2,  -3s³ + 4s² + s,  s³ - s²),

an interpolating cubic: C(i) = P_i exactly, with a continuous tangent (P_{i+1} - P_{i-1}) / 2
at every keyframe. The weights sum to 1 and two of them are negative inside each segment.

* Open paths take t in [0, K - 1] and clamp the missing neighbours at the ends (P_{-1} = P_0,
  P_K = P_{K-1}).
* Closed paths (``closed=True``) take any real t and loop with period K (indices mod K).

A keyframe can enter a frame's combination twice (the clamped ends, and closed loops with K < 4);
:func:`spline_weights` merges those weights into one, which is what the law of the frame depends
on (:func:`latentot.matched_spline`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from latentot import _checks
from latentot._promotion import half_in_float32

__all__ = ["spline", "spline_family", "spline_weights"]


def spline_weights(t, num_keyframes: int, *, closed: bool = False):
    """Keyframe indices and merged weights of the uniform Catmull-Rom spline.

    Args:
      t: ``[T]`` parameters (a concrete t is computed in NumPy, so the weights stay concrete
        under ``jax.jit`` and equal weight vectors can share one transport map).
      num_keyframes: K >= 2 (static).
      closed: loop with period K.

    Returns:
      ``(index, weight)``, both ``[T, 4]``: frame r is Σ_j weight[r, j] · keyframes[index[r, j]].
      A keyframe index occurs at most once with a nonzero weight in each row (repeats are merged
      into the first occurrence and zeroed).
    """
    k = _checks.check_positive_int("num_keyframes", num_keyframes, minimum=2)
    xp, t, i, s = _locate(t, k, closed)
    s = xp.where(xp.isfinite(t), s, t)  # a non-finite traced t gives NaN weights (documented)
    return _segment_weights(i, s, k, closed, xp)


def _locate(t, k: int, closed: bool):
    """``(xp, t, i, s)``: NumPy or jax.numpy, t, and each frame's segment and fraction."""
    ct = _checks.concrete(t)
    xp, t = (np, ct) if ct is not None else (jnp, t)
    safe = xp.where(xp.isfinite(t), t, 0)
    if closed:
        u = safe - k * xp.floor(safe / k)
        i = xp.clip(xp.floor(u), 0, k - 1)
        s = xp.clip(u - i, 0, 1)
    else:
        u = xp.clip(safe, 0, k - 1)
        i = xp.clip(xp.floor(u), 0, k - 2)
        s = u - i
    return xp, t, i.astype(np.int32), s


def _segment_weights(i, s, k: int, closed: bool, xp):
    """Keyframe indices and merged weights ``[T, 4]`` of segments ``i`` ``[T]`` at fractions
    ``s`` ``[T]``."""
    raw = i[:, None] + xp.arange(-1, 3, dtype=np.int32)
    index = raw % k if closed else xp.clip(raw, 0, k - 1)
    s2, s3 = s * s, s * s * s
    c = xp.stack([-s3 + 2 * s2 - s, 3 * s3 - 5 * s2 + 2, -3 * s3 + 4 * s2 + s, s3 - s2], -1) / 2
    same = index[:, :, None] == index[:, None, :]  # [T, 4, 4]
    earlier = xp.tril(xp.ones((4, 4), bool), -1)
    first = ~xp.any(same & earlier, axis=-1)  # no earlier entry with the same keyframe
    merged = xp.where(first, xp.sum(xp.where(same, c[:, None, :], 0), -1), 0)
    return index, merged


def spline_family(t, num_keyframes: int, *, closed: bool = False, num_nodes: int = 129):
    """The frames' weights as points of a few one-parameter families of weight vectors.

    Inside segment i a frame's merged weights are a polynomial in its fraction s, and the
    segments of one path come in at most three kinds with different merging: the first and
    the last segment of an open path (their clamped neighbour merged) and all others (every
    segment of a closed path is of one kind). The law of a frame therefore depends on its kind
    and s only. The nodes are s_j = sin²(π u_j / 2) at u_j = j / (M - 1), dense near s = 0
    and 1, where the law changes fastest.

    Args:
      t: ``[T]`` parameters (traced or concrete).
      num_keyframes: K >= 2 (static).
      closed: loop with period K.
      num_nodes: M, nodes per kind (static, >= 4).

    Returns:
      ``(nodes, kind, pos)``: the weights ``[V, M, 4]`` (NumPy float64) of every kind at every
      node, and per frame its kind ``[T]`` (int32) and its position ``[T]`` in node units
      (u (M - 1), in [0, M - 1]; NaN for a non-finite t).
    """
    k = _checks.check_positive_int("num_keyframes", num_keyframes, minimum=2)
    m = _checks.check_positive_int("num_nodes", num_nodes, minimum=4)
    segments = [0] if closed else sorted({0, min(1, k - 2), k - 2})
    s_nodes = np.sin(np.pi * np.linspace(0.0, 1.0, m) / 2) ** 2
    nodes = np.stack(
        [_segment_weights(np.full(m, i, np.int32), s_nodes, k, closed, np)[1] for i in segments]
    )
    xp, t, i, s = _locate(t, k, closed)
    kind = xp.zeros(i.shape, np.int32)
    if not closed:
        kind = xp.where(i == 0, 0, xp.where(i == k - 2, len(segments) - 1, 1)).astype(np.int32)
    # u = (2 / π) arcsin √s, through arctan2 so that both ends keep their precision; at the
    # ends themselves (the keyframes) through a safe value, so that gradients stay finite.
    inside = (s > 0) & (s < 1)
    safe_s = xp.where(inside, s, 0.5)
    u = (2 / np.pi) * xp.arctan2(xp.sqrt(safe_s), xp.sqrt(1 - safe_s))
    pos = xp.clip(xp.where(inside, u, xp.where(s >= 1, 1, 0)) * (m - 1), 0, m - 1)
    pos = xp.where(xp.isfinite(t), pos, t * 0 + np.nan)
    return nodes, kind, pos


def check_keyframes(keyframes, t, closed: bool):
    """Validates a spline's arguments; returns ``(keyframes, t)`` as float arrays.

    Shape problems raise ``ValueError`` at trace time; a concrete t must be finite, and lie in
    [0, K - 1] for an open path.
    """
    kf = _checks.as_float("keyframes", keyframes)
    if kf.ndim < 2:
        raise ValueError(f"keyframes must be [K, ..., d] with rank >= 2, got shape {kf.shape}")
    k = kf.shape[0]
    if k < 2:
        raise ValueError(f"a spline needs at least K = 2 keyframes, got keyframes {kf.shape}")
    ct = _checks.concrete(t)
    if ct is not None:
        if ct.ndim != 1:
            raise ValueError(f"t must be [T], got shape {ct.shape}")
        if closed:
            _checks.check_range("t", ct)
        else:
            _checks.check_range("t", ct, low=0.0, high=float(k - 1))
        return kf, ct
    tt = _checks.as_float("t", t)
    if tt.ndim != 1:
        raise ValueError(f"t must be [T], got shape {tt.shape}")
    return kf, tt


def combine_frames(keyframes, index, weight):
    """Σ_j weight[r, j] · keyframes[index[r, j]] for every frame r: ``[T, ..., d]``."""
    w = jnp.asarray(weight, keyframes.dtype)
    return jnp.einsum("rj,rj...->r...", w, keyframes[jnp.asarray(index)])


@half_in_float32("keyframes")
def spline(keyframes, t, *, closed: bool = False) -> jax.Array:
    """The uniform Catmull-Rom spline through latent keyframes (see the module docstring).

    Args:
      keyframes: ``[K, ..., d]``, K >= 2.
      t: ``[T]`` parameters. Open paths: t in [0, K - 1], frame t = i is keyframe i. Closed
        paths: any real t, period K. A concrete t outside the range, or not finite, raises
        ``ValueError``. Traced (under ``jax.jit`` with t an argument), an open path clamps t to
        [0, K - 1] (holding the end keyframes), and a non-finite t gives a NaN frame.
      closed: loop through the keyframes (keyframe K - 1 joins keyframe 0 smoothly).

    Returns:
      ``[T, ..., d]``.
    """
    kf, t = check_keyframes(keyframes, t, closed)
    index, weight = spline_weights(t, kf.shape[0], closed=closed)
    return combine_frames(kf, index, weight)
