"""Dtype policy: half precision computed in float32, and third-party code under strict promotion.

Half precision
--------------
bfloat16 and float16 latents (diffusion noise, StyleGAN codes on GPU) go through every operator
and prior method. Half precision has too few bits for what latentot computes inside (FFT
convolutions, special functions, tabulated maps, sums over 16,384 components), so
:func:`half_in_float32` wraps the public functions once: half-precision arguments are computed in
float32 and the result is cast back (saturating at the half dtype's largest finite value, so a
finite float32 result stays finite). The result is thus within one half-precision rounding of the
float32 result of the same (upcast) inputs.

Strict promotion
----------------

latentot's own arithmetic is promotion-clean (the tests run with
``jax_numpy_dtype_promotion = "strict"``). ott-jax's Sinkhorn (``marginal_error`` raises an
int32 array to a float power), optax's Hungarian algorithm and optax's Adam (bias correction
mixes a Python float with the int32 step count) are not. Two tools, for two cases:

* :func:`third_party_promotion`: calls into ott-jax, and into optimizers a user hands to
  ``aeot.fit`` (whose state latentot must not alter), run under standard promotion;
* :func:`promotion_clean`: the optax optimizers latentot builds for its own digits models get
  floating step counts instead, and trace under strict promotion unchanged.

Every array latentot hands third-party code already has the caller's dtype.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

if TYPE_CHECKING:
    import optax  # imported where it is used: ``import latentot`` does not load optax

__all__ = [
    "cast_back",
    "compute_dtype",
    "half_in_float32",
    "is_half",
    "promotion_clean",
    "third_party_promotion",
]

_HALF = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))


def is_half(dtype) -> bool:
    """Whether ``dtype`` is bfloat16 or float16."""
    return jnp.dtype(dtype) in _HALF


def compute_dtype(dtype):
    """The dtype latentot computes in for inputs of ``dtype``: float32 for half precision."""
    return jnp.dtype(jnp.float32) if is_half(dtype) else jnp.dtype(dtype)


def cast_back(x, dtype) -> jax.Array:
    """``x`` cast to ``dtype``; finite values beyond its range saturate instead of becoming inf.

    (float16 ends at 65504: a Cauchy draw or a far tail quantile would otherwise overflow.)
    Infinite and NaN values are kept as they are.
    """
    x = jnp.asarray(x)
    dtype = jnp.dtype(dtype)
    if x.dtype == dtype or not jnp.issubdtype(x.dtype, jnp.floating):
        return x
    if jnp.issubdtype(dtype, jnp.floating) and jnp.finfo(dtype).max < jnp.finfo(x.dtype).max:
        top = float(jnp.finfo(dtype).max)
        x = jnp.where(jnp.isfinite(x), jnp.clip(x, -top, top), x)
    return x.astype(dtype)


def _half_dtype(value):
    """The dtype of an array-like argument if it is half precision, else ``None``."""
    dtype = getattr(value, "dtype", None)
    if dtype is None and isinstance(value, (list, tuple)) and value:
        dtypes = [getattr(v, "dtype", None) for v in value]
        if all(d is not None for d in dtypes):
            try:
                dtype = jnp.result_type(*dtypes)
            except (TypeError, ValueError):
                return None
    if dtype is None:
        return None
    try:
        return jnp.dtype(dtype) if is_half(dtype) else None
    except TypeError:  # not a NumPy dtype (e.g. a PRNG key)
        return None


def _dtype(value):
    """The floating dtype of an array argument (or a list of arrays), else ``None``."""
    dtype = getattr(value, "dtype", None)
    if dtype is None:
        return _half_dtype(value)
    try:
        dtype = jnp.dtype(dtype)
    except TypeError:  # e.g. a PRNG key
        return None
    return dtype if jnp.issubdtype(dtype, jnp.floating) else None


def _upcast(value):
    if _half_dtype(value) is None:
        return value
    if isinstance(value, (list, tuple)):
        return jnp.stack([jnp.asarray(v, jnp.float32) for v in value])
    return value.astype(jnp.float32)


def half_in_float32(*names: str) -> Callable:
    """Decorator: computes ``fn`` in float32 when its latent arguments are half precision.

    ``names`` are the arguments whose dtype is the result's (the latents, not the coefficients:
    a bfloat16 latent interpolated with float32 ``t`` stays bfloat16). When their common dtype
    is bfloat16 or float16, every half-precision array argument is cast to float32, ``fn`` runs,
    and the floating leaves of its result are cast back with :func:`cast_back`. Other dtypes call
    ``fn`` unchanged. Mixed latent dtypes follow JAX's promotion (bfloat16 with float16 is
    float32; under ``jax_numpy_dtype_promotion = "strict"`` ``fn`` raises its own
    ``ValueError``).
    """

    def wrap(fn):
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapped(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            latents = [bound.arguments[n] for n in names if n in bound.arguments]
            dtypes = [_dtype(v) for v in latents]
            dtypes = [d for d in dtypes if d is not None]
            try:
                target = jnp.result_type(*dtypes) if dtypes else None
            except (TypeError, ValueError):  # mixed under strict promotion: fn says why
                target = None
            if target is None or not is_half(target):
                return fn(*args, **kwargs)
            for key, value in bound.arguments.items():
                bound.arguments[key] = _upcast(value)
            out = fn(*bound.args, **bound.kwargs)
            return jax.tree.map(lambda x: cast_back(x, target), out)

        return wrapped

    return wrap


def third_party_promotion():
    """``jax.numpy_dtype_promotion("standard")``, for calls into ott-jax and optax only."""
    return jax.numpy_dtype_promotion("standard")


def promotion_clean(optimizer: optax.GradientTransformation) -> optax.GradientTransformation:
    """Returns ``optimizer`` with floating-point step counts: its updates trace under strict
    promotion.

    optax keeps step counts as int32 and mixes them with Python floats (Adam's bias correction
    ``b1 ** count``, the schedules), which ``jax_numpy_dtype_promotion = "strict"`` rejects.
    Counts of the parameters' floating dtype are exact up to 2**24 steps in float32, and give
    the same updates bit for bit.
    """

    import optax

    def init(params):
        leaves = [x for x in jax.tree.leaves(params) if jnp.issubdtype(x.dtype, jnp.floating)]
        dtype = leaves[0].dtype if leaves else jnp.result_type(float)
        return jax.tree.map(
            lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.integer) else x,
            optimizer.init(params),
        )

    return optax.GradientTransformation(init, optimizer.update)
