"""Latent priors with i.i.d. components.

The prior protocol
------------------
Every matched operator accepts any object with these methods, each acting component-wise and
broadcasting over arrays:

* ``sample(rng, shape, dtype=None) -> [*shape]`` draws from the prior.
* ``log_prob(x)``: log-density of each component (not summed over the latent axis).
* ``cdf(x)``: F_Z(x).
* ``icdf(u)``: F_Z⁻¹(u), the quantile function.

and, optionally (the defaults are used when absent; provide them for accurate upper tails):

* ``sf(x)``: survival 1 - F_Z(x); default ``1 - cdf(x)``.
* ``isf(q)``: inverse survival F_Z⁻¹(1 - q); default ``icdf(1 - q)``.
* ``support``: ``(low, high)`` of one component; default ``(-inf, inf)``.
* ``loc``, ``scale`` and ``standard()``: a location-scale family; matching then works on the
  standardised prior and maps back, and per-component (array) ``loc``/``scale`` are allowed.
* ``norm_cdf(r, dim)`` and ``norm_icdf(u, dim)`` (optionally ``norm_sf``, ``norm_isf``): the
  exact law of ``‖z - loc‖`` for an isotropic prior (used by
  :func:`latentot.spherical_cauchy_lerp`).

Every method accepts bfloat16 and float16 arrays: it computes in float32 (the special functions
have no half-precision kernels, nor the precision) and returns the input's dtype.

Priors are frozen dataclasses registered as pytrees: their parameters are data fields, so a
prior can be passed through ``jax.jit`` and ``jax.vmap`` (a batch of priors is a prior with
array-valued parameters) and its parameters can be traced. Concrete parameters are validated when
a prior is constructed (``ValueError`` naming the argument); traced ones and ``None`` (a prefix
tree such as ``in_axes=Gaussian(0, None)``) are not. As in equinox, unflattening does not call
the constructor, so ``jax.tree.map`` and every other tree utility may rebuild a prior with any
leaves (zeros, ``None``, tracers, batch axes) without tripping its validation.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy import special

from latentot import _checks, chi
from latentot._promotion import cast_back, compute_dtype, half_in_float32

__all__ = [
    "Cauchy",
    "Gaussian",
    "Laplace",
    "Logistic",
    "Prior",
    "Uniform",
    "isf",
    "quantile_map",
    "sf",
    "standardize",
    "support",
]


@runtime_checkable
class Prior(Protocol):
    """The protocol every prior satisfies (see the module docstring for the optional parts)."""

    def sample(self, rng: jax.Array, shape: tuple[int, ...], dtype: Any = None) -> jax.Array: ...

    def log_prob(self, x: jax.Array) -> jax.Array: ...

    def cdf(self, x: jax.Array) -> jax.Array: ...

    def icdf(self, u: jax.Array) -> jax.Array: ...


# --------------------------------------------------------------------------------------------
# Protocol helpers: the optional methods, with their defaults.


def sf(prior, x):
    """Survival function 1 - F_Z(x), using ``prior.sf`` when the prior has one."""
    f = getattr(prior, "sf", None)
    return f(x) if callable(f) else 1 - prior.cdf(x)


def isf(prior, q):
    """Inverse survival F_Z⁻¹(1 - q), using ``prior.isf`` when the prior has one."""
    f = getattr(prior, "isf", None)
    return f(q) if callable(f) else prior.icdf(1 - q)


def quantile_map(prior, f, s):
    """F_Z⁻¹ of a probability given both as a CDF value ``f`` and a survival value ``s``.

    Uses ``icdf(f)`` in the lower half and ``isf(s)`` in the upper half, so that neither tail
    loses precision to 1 - p rounding. Probabilities are kept inside [tiny, 1/2], which keeps the
    result finite (and its gradient defined) for every input.
    """
    tiny = jnp.finfo(jnp.result_type(f)).tiny
    lower = f <= s
    lo = prior.icdf(jnp.clip(f, tiny, 0.5))
    hi = isf(prior, jnp.clip(s, tiny, 0.5))
    return jnp.where(lower, lo, hi)


def support(prior) -> tuple[float, float]:
    """``(low, high)`` of one component; ``(-inf, inf)`` unless the prior says otherwise."""
    return getattr(prior, "support", (-math.inf, math.inf))


def standardize(prior):
    """Splits a location-scale prior into ``(standard prior, loc, scale)``.

    Priors outside a location-scale family are returned as ``(prior, 0, 1)``.
    """
    std = getattr(prior, "standard", None)
    if callable(std) and hasattr(prior, "loc") and hasattr(prior, "scale"):
        return std(), prior.loc, prior.scale
    return prior, 0.0, 1.0


# --------------------------------------------------------------------------------------------
# Location-scale families. Each subclass supplies the standard functions ``_cdf0`` etc.


def _default_dtype(dtype):
    return jnp.dtype(dtype) if dtype is not None else jnp.result_type(float)


class _LocScale:
    """Shared machinery of the location-scale priors: x = loc + scale · z0."""

    loc: Any
    scale: Any

    def __post_init__(self) -> None:
        # Runs only when a user constructs a prior (the pytree unflatten bypasses __init__).
        self._check_init()

    def _check_init(self) -> None:
        """Raises ``ValueError`` naming the parameter if a concrete one is invalid."""
        _check_range("loc", self.loc)
        _check_range("scale", self.scale, low=0.0, low_open=True)

    @property
    def dim(self) -> int | None:
        """Latent dimension fixed by array-valued parameters, or ``None`` (any dimension)."""
        shape = jnp.broadcast_shapes(jnp.shape(self.loc), jnp.shape(self.scale))
        return shape[-1] if shape else None

    def standard(self):
        """The same family with loc = 0 and scale = 1."""
        return type(self)()

    def _z(self, x):
        x = _checks.as_float("x", x)
        return (x - self.loc) / self.scale

    def _x(self, z):
        return self.loc + self.scale * z

    def sample(self, rng: jax.Array, shape, dtype=None) -> jax.Array:
        """Draws an array of the given shape; loc and scale broadcast against it.

        bfloat16 and float16 draws are made in float32 and rounded (float16 saturates at
        ±65504 rather than overflowing, e.g. for Cauchy draws).
        """
        shape = tuple(shape)
        dtype = _default_dtype(dtype)
        z0 = self._sample0(rng, shape, compute_dtype(dtype))  # half precision: drawn in float32
        return cast_back(self._x(z0).astype(z0.dtype), dtype)

    @half_in_float32("x")
    def log_prob(self, x):
        """Component-wise log-density."""
        return self._log_prob0(self._z(x)) - jnp.log(self.scale)

    @half_in_float32("x")
    def cdf(self, x):
        """F_Z(x)."""
        return self._cdf0(self._z(x))

    @half_in_float32("x")
    def sf(self, x):
        """1 - F_Z(x), accurate in the upper tail."""
        return self._cdf0(-self._z(x)) if self._symmetric else 1 - self._cdf0(self._z(x))

    @half_in_float32("u")
    def icdf(self, u):
        """F_Z⁻¹(u), accurate in the lower tail."""
        return self._x(self._icdf0(_checks.as_float("u", u)))

    @half_in_float32("q")
    def isf(self, q):
        """F_Z⁻¹(1 - q), accurate in the upper tail."""
        return self._x(-self._icdf0(_checks.as_float("q", q)))

    _symmetric = True


def _check_range(name: str, value, **bounds) -> None:
    if value is not None:  # None: a leaf of a prefix tree (in_axes=Gaussian(0, None)), unchecked
        _checks.check_range(name, value, **bounds)


def _register(cls):
    """A frozen dataclass whose fields are pytree leaves, unflattened without ``__init__``.

    ``jax.tree_util.register_dataclass`` rebuilds nodes through the constructor, which would
    validate again on every unflatten (``jax.tree.map(lambda x: x * 0, Gaussian())`` would raise).
    Here unflattening sets the fields directly, as equinox modules do.
    """
    cls = dataclasses.dataclass(frozen=True)(cls)
    names = tuple(f.name for f in dataclasses.fields(cls))
    keys = tuple(jax.tree_util.GetAttrKey(n) for n in names)

    def flatten_with_keys(prior):
        return tuple(zip(keys, (getattr(prior, n) for n in names), strict=True)), None

    def flatten(prior):
        return tuple(getattr(prior, n) for n in names), None

    def unflatten(_, leaves):
        prior = object.__new__(cls)
        for n, leaf in zip(names, leaves, strict=True):
            object.__setattr__(prior, n, leaf)
        return prior

    jax.tree_util.register_pytree_with_keys(cls, flatten_with_keys, unflatten, flatten)
    return cls


@_register
class Gaussian(_LocScale):
    """Normal prior N(loc, scale²) per component."""

    loc: Any = 0.0
    scale: Any = 1.0

    # Stable with index 2: Σ w_k Z_k ~ N(loc Σ w_k, scale² Σ w_k²).
    stable_norm_order = 2

    def _sample0(self, rng, shape, dtype):
        return jax.random.normal(rng, shape, dtype)

    def _log_prob0(self, z):
        return -0.5 * z * z - 0.5 * math.log(2 * math.pi)

    def _cdf0(self, z):
        return special.ndtr(z)

    def _icdf0(self, u):
        return special.ndtri(u)

    @half_in_float32("r")
    def norm_cdf(self, r, dim: int):
        """CDF of ‖z‖ for z ~ N(0, scale² I_dim): P(dim/2, r²/(2 scale²)) (the chi law)."""
        return chi.chi_cdf(_checks.as_float("r", r) / self.scale, dim)

    @half_in_float32("r")
    def norm_sf(self, r, dim: int):
        """Survival of ‖z‖ for z ~ N(0, scale² I_dim), accurate in the upper tail."""
        return chi.chi_sf(_checks.as_float("r", r) / self.scale, dim)

    @half_in_float32("q")
    def norm_isf(self, q, dim: int):
        """Inverse survival of ‖z‖ for z ~ N(0, scale² I_dim), accurate for small q."""
        return self.scale * chi.chi_isf(_checks.as_float("q", q), dim)

    @half_in_float32("u")
    def norm_icdf(self, u, dim: int):
        """Quantile of ‖z‖ for z ~ N(0, scale² I_dim) (see :func:`latentot.chi.chi_icdf`)."""
        return self.scale * chi.chi_icdf(_checks.as_float("u", u), dim)


@_register
class Uniform(_LocScale):
    """Uniform prior on [low, high] per component."""

    low: Any = -1.0
    high: Any = 1.0

    def _check_init(self) -> None:
        _check_range("low", self.low)
        _check_range("high", self.high)
        lo, hi = _checks.concrete(self.low), _checks.concrete(self.high)
        if self.low is None or self.high is None:
            return
        if lo is not None and hi is not None and np.any(lo >= hi):
            raise ValueError(f"low must be < high, got low={self.low!r}, high={self.high!r}")

    @property
    def loc(self):
        return (self.low + self.high) / 2

    @property
    def scale(self):
        return (self.high - self.low) / 2

    @property
    def support(self):
        return (self.low, self.high)

    def standard(self):
        return Uniform(-1.0, 1.0)

    def _sample0(self, rng, shape, dtype):
        return jax.random.uniform(rng, shape, dtype, minval=-1.0, maxval=1.0)

    def _log_prob0(self, z):
        return jnp.where(jnp.abs(z) <= 1, -math.log(2.0), -jnp.inf)

    def _cdf0(self, z):
        return jnp.clip((z + 1) / 2, 0, 1)

    def _icdf0(self, u):
        return jnp.clip(2 * u - 1, -1, 1)

    # Measured from the nearer end, so that both tails keep float32 precision.
    @half_in_float32("x")
    def cdf(self, x):
        """F_Z(x) = (x - low) / (high - low), clipped to [0, 1]."""
        x = _checks.as_float("x", x)
        return jnp.clip((x - self.low) / (self.high - self.low), 0, 1)

    @half_in_float32("x")
    def sf(self, x):
        """1 - F_Z(x) = (high - x) / (high - low), clipped to [0, 1]."""
        x = _checks.as_float("x", x)
        return jnp.clip((self.high - x) / (self.high - self.low), 0, 1)

    @half_in_float32("u")
    def icdf(self, u):
        """low + (high - low) u."""
        u = jnp.clip(_checks.as_float("u", u), 0, 1)
        return self.low + (self.high - self.low) * u

    @half_in_float32("q")
    def isf(self, q):
        """high - (high - low) q."""
        q = jnp.clip(_checks.as_float("q", q), 0, 1)
        return self.high - (self.high - self.low) * q

    def sample(self, rng: jax.Array, shape, dtype=None) -> jax.Array:
        """Draws an array of the given shape, inside [low, high]."""
        x = super().sample(rng, shape, dtype)
        return jnp.clip(x, self.low, self.high).astype(x.dtype)


@_register
class Cauchy(_LocScale):
    """Cauchy prior with location ``loc`` and scale γ = ``scale`` per component."""

    loc: Any = 0.0
    scale: Any = 1.0

    # Stable with index 1: Σ w_k Z_k ~ Cauchy(loc Σ w_k, scale Σ |w_k|).
    stable_norm_order = 1

    def _sample0(self, rng, shape, dtype):
        return jax.random.cauchy(rng, shape, dtype)

    def _log_prob0(self, z):
        return -jnp.log1p(z * z) - math.log(math.pi)

    def _cdf0(self, z):
        # atan2(1, -z)/π is 1/2 + atan(z)/π without the cancellation for z → -∞.
        return jnp.arctan2(jnp.ones_like(z), -z) / math.pi

    def _icdf0(self, u):
        # Each half uses the tail it is accurate in; 1 - u is exact for u >= 1/2.
        lower = jnp.minimum(u, 1 - u)
        q = -1 / jnp.tan(math.pi * lower)
        return jnp.where(u < 0.5, q, -q)


@_register
class Laplace(_LocScale):
    """Laplace prior with density exp(-abs(x - loc) / scale) / (2 scale) per component."""

    loc: Any = 0.0
    scale: Any = 1.0

    def _sample0(self, rng, shape, dtype):
        return jax.random.laplace(rng, shape, dtype)

    def _log_prob0(self, z):
        return -jnp.abs(z) - math.log(2.0)

    def _cdf0(self, z):
        return jnp.where(z < 0, 0.5 * jnp.exp(jnp.minimum(z, 0)), 1 - 0.5 * jnp.exp(-jnp.abs(z)))

    def _icdf0(self, u):
        lower = jnp.minimum(u, 1 - u)
        q = jnp.log(2 * lower)
        return jnp.where(u < 0.5, q, -q)


@_register
class Logistic(_LocScale):
    """Logistic prior with CDF 1 / (1 + exp(-(x - loc) / scale)) per component."""

    loc: Any = 0.0
    scale: Any = 1.0

    def _sample0(self, rng, shape, dtype):
        return jax.random.logistic(rng, shape, dtype)

    def _log_prob0(self, z):
        a = jnp.abs(z)
        return -a - 2 * jax.nn.softplus(-a)

    def _cdf0(self, z):
        return jax.nn.sigmoid(z)

    def _icdf0(self, u):
        return jnp.log(u) - jnp.log1p(-u)
