"""Element-wise maps under explicit mesh axes (``jax.make_mesh``'s default axis types)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
from jax.sharding import AxisType

__all__ = ["apply_map", "elementwise"]


def elementwise(f: Callable[..., jax.Array], y: jax.Array, *args: Any) -> jax.Array:
    """``f(*args, y)`` for an element-wise ``f``, also when ``y`` is sharded over Explicit axes.

    Under Explicit axes every op must know its output sharding. Some do not: the table lookup
    of a numerical transport map (a gather of a replicated table at sharded positions), or the
    selects inside ``jax.scipy.special.ndtri``; JAX refuses them with errors about resource
    axes. ``f`` then runs with those axes switched to Auto (``jax.sharding.auto_axes``) and the
    result gets ``y``'s sharding back, so the caller sees only a sharded result, with or
    without ``jax.set_mesh``. Without Explicit axes this is exactly ``f(*args, y)``.

    Args:
      f: a function whose result has the shape of ``y``.
      y: the (possibly sharded) array.
      *args: pytrees passed before ``y`` (e.g. the map, or the prior); arrays built under the
        same mesh must come in here, not through a closure, so that they are converted too.

    Returns:
      ``f(*args, y)``, sharded like ``y``.
    """
    sharding = getattr(jax.typeof(y), "sharding", None)
    mesh = getattr(sharding, "mesh", None)
    if mesh is None or mesh.empty:
        return f(*args, y)
    explicit = tuple(
        name
        for name, kind in zip(mesh.axis_names, mesh.axis_types, strict=True)
        if kind == AxisType.Explicit
    )
    if not explicit:
        return f(*args, y)
    run = jax.sharding.auto_axes(
        lambda args, y: f(*args, y), axes=explicit, out_sharding=sharding.spec
    )
    with jax.sharding.use_abstract_mesh(mesh):
        return run(args, y)


def _call(T, y):
    return T(y)


def apply_map(T: Any, y: jax.Array) -> jax.Array:
    """``T(y)`` for a transport map ``T`` (a pytree), through :func:`elementwise`."""
    return elementwise(_call, y, T)
