"""Argument validation shared by the public functions.

Two kinds of checks, following the library's error policy:

* Shape, rank and dtype problems are known at trace time, so they raise ``ValueError`` even under
  ``jax.jit``.
* Value problems (a negative scale, ``t`` outside ``[0, 1]``) can only be checked when the value
  is concrete. Traced values pass through unchecked; each public function documents what it does
  with them.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

_REQUIRED_PRIOR_METHODS = ("sample", "log_prob", "cdf", "icdf")


def concrete(value) -> np.ndarray | None:
    """Returns ``value`` as a NumPy array if it is concrete, ``None`` if it is traced."""
    if isinstance(value, jax.core.Tracer):
        return None
    try:
        return np.asarray(value, dtype=float)
    except (TypeError, ValueError, jax.errors.ConcretizationTypeError):
        return None


def check_range(
    name: str,
    value,
    *,
    low: float = -np.inf,
    high: float = np.inf,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Raises ``ValueError`` naming ``name`` if a concrete ``value`` leaves the interval."""
    arr = concrete(value)
    if arr is None:
        return
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {_show(arr)}")
    lo_bad = arr <= low if low_open else arr < low
    hi_bad = arr >= high if high_open else arr > high
    if np.any(lo_bad) or np.any(hi_bad):
        lb = "(" if low_open else "["
        hb = ")" if high_open else "]"
        raise ValueError(f"{name} must lie in {lb}{low}, {high}{hb}, got {_show(arr)}")


def check_positive_int(name: str, value, *, minimum: int = 1) -> int:
    """Returns ``value`` as a Python int, or raises ``ValueError`` naming ``name``."""
    try:
        ivalue = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be a Python int, got {value!r}") from None
    if ivalue < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {ivalue}")
    return ivalue


def check_prior(prior, *, extra: Sequence[str] = ()) -> None:
    """Raises ``TypeError`` if ``prior`` lacks the methods of the prior protocol."""
    missing = [
        m for m in (*_REQUIRED_PRIOR_METHODS, *extra) if not callable(getattr(prior, m, None))
    ]
    if missing:
        raise TypeError(
            f"{type(prior).__name__} is not a latentot prior: it lacks {', '.join(missing)}. "
            "A prior needs sample(rng, shape), log_prob(x), cdf(x) and icdf(u); "
            "see latentot.priors.Prior."
        )


def as_float(name: str, x) -> jax.Array:
    """Converts ``x`` to a floating array; integer and boolean inputs become the default float."""
    x = jnp.asarray(x)
    if jnp.issubdtype(x.dtype, jnp.complexfloating):
        raise ValueError(f"{name} must be real, got dtype {x.dtype}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    return x


def latent(name: str, z) -> jax.Array:
    """Checks that ``z`` is a floating array of rank >= 1 (last axis: latent dimension)."""
    z = as_float(name, z)
    if z.ndim < 1:
        raise ValueError(f"{name} must have rank >= 1 with the latent dimension last, got a scalar")
    return z


def same_latent(names: Sequence[str], arrays: Sequence) -> tuple[list[jax.Array], tuple[int, ...]]:
    """Checks latent arrays share the last axis and broadcast; returns them with the lead shape."""
    zs = [latent(n, a) for n, a in zip(names, arrays, strict=True)]
    d = zs[0].shape[-1]
    for n, z in zip(names[1:], zs[1:], strict=True):
        if z.shape[-1] != d:
            raise ValueError(
                f"{names[0]} and {n} must share the latent dimension (last axis): "
                f"got shapes {zs[0].shape} and {z.shape}"
            )
    try:
        lead = jnp.broadcast_shapes(*(z.shape[:-1] for z in zs))
    except ValueError:
        shapes = ", ".join(f"{n}{z.shape}" for n, z in zip(names, zs, strict=True))
        raise ValueError(f"leading axes do not broadcast: {shapes}") from None
    try:
        dtype = jnp.result_type(*zs)
    except ValueError:  # jax_numpy_dtype_promotion = "strict" and mixed dtypes
        dtypes = ", ".join(f"{n} {z.dtype}" for n, z in zip(names, zs, strict=True))
        raise ValueError(
            f"{', '.join(names)} have dtypes ({dtypes}) that do not promote under strict dtype "
            "promotion: cast them to one dtype"
        ) from None
    return [z.astype(dtype) for z in zs], lead


def latent_axes(axis, ndim: int) -> tuple[int, ...]:
    """Normalises ``axis`` (an int or a tuple of ints) against rank ``ndim``.

    Returns the axes as sorted negative indices; repeated or out-of-range axes raise
    ``ValueError``.
    """
    axes = (axis,) if not isinstance(axis, (tuple, list)) else tuple(axis)
    if not axes:
        raise ValueError("axis must name at least one axis, got ()")
    out = []
    for a in axes:
        try:
            a = operator.index(a)
        except TypeError:
            raise ValueError(f"axis must be an int or a tuple of ints, got {axis!r}") from None
        if not -ndim <= a < ndim:
            raise ValueError(f"axis {a} is out of range for an array of rank {ndim}")
        out.append(a - ndim if a >= 0 else a)
    if len(set(out)) != len(out):
        raise ValueError(f"axis {axis!r} repeats an axis")
    return tuple(sorted(out))


def flatten_latent(names: Sequence[str], arrays: Sequence, axis):
    """Merges the latent axes ``axis`` of each array into one last axis of size d.

    An operation that reduces over the latent's dimensions (a norm, an angle) computes on the
    flattened arrays ``[*lead, d]``; ``restore`` puts a result ``[*lead', d]`` back in the
    layout of the inputs (the latent axes where they were, counted from the end, and any new
    leading axes first).

    Returns:
      ``(flats, restore)``.
    """
    zs = [latent(n, a) for n, a in zip(names, arrays, strict=True)]
    axes = latent_axes(axis, zs[0].ndim)
    sizes = tuple(zs[0].shape[a] for a in axes)
    for n, z in zip(names, zs, strict=True):
        if latent_axes(axis, z.ndim) != axes or tuple(z.shape[a] for a in axes) != sizes:
            raise ValueError(
                f"{names[0]} and {n} must share the latent axes {axis!r}: got shapes "
                f"{zs[0].shape} and {z.shape}"
            )
    k = len(axes)
    end = tuple(range(-k, 0))
    d = math.prod(sizes)

    def flat(z):
        z = jnp.moveaxis(z, axes, end) if axes != end else z
        return z.reshape(*z.shape[: z.ndim - k], d)

    def restore(y):
        y = y.reshape(*y.shape[:-1], *sizes)
        return jnp.moveaxis(y, end, axes) if axes != end else y

    return [flat(z) for z in zs], restore


def coefficient(name: str, value, lead: tuple[int, ...], dtype) -> jax.Array:
    """Converts a coefficient (t, eps, ...) and checks that it broadcasts with ``lead``."""
    c = as_float(name, value)
    try:
        jnp.broadcast_shapes(c.shape, lead)
    except ValueError:
        raise ValueError(
            f"{name} of shape {c.shape} does not broadcast with the leading axes {lead}"
        ) from None
    return c.astype(dtype)


def interpolation_t(t, lead: tuple[int, ...], dtype) -> jax.Array:
    """An interpolation coefficient: concrete values must lie in [0, 1]; broadcasts with lead."""
    check_range("t", t, low=0.0, high=1.0)
    return coefficient("t", t, lead, dtype)


def step_size(eps, dtype) -> jax.Array:
    """A scalar step size eps >= 0 (concrete values checked)."""
    check_range("eps", eps, low=0.0)
    e = as_float("eps", eps)
    if e.ndim:
        raise ValueError(f"eps must be a scalar (vmap over it for a sweep), got shape {e.shape}")
    return e.astype(dtype)


def _show(arr: np.ndarray) -> str:
    if arr.ndim == 0:
        return repr(float(arr))
    bad = arr.ravel()[:4]
    return f"array with values like {bad.tolist()}"
