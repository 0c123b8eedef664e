"""Applying transport maps under explicit mesh axes (``jax.make_mesh``'s default axis types)."""

from __future__ import annotations

from typing import Any

import jax
from jax.sharding import AxisType

__all__ = ["apply_map"]


def apply_map(T: Any, y: jax.Array) -> jax.Array:
    """``T(y)`` for a transport map ``T``, also when ``y`` is sharded over Explicit mesh axes.

    Under Explicit axes every op must know its output sharding, and the table lookups of a
    numerical map (a gather of a replicated table at sharded positions) do not: JAX refuses
    them. The map then runs with those axes switched to Auto (``jax.sharding.auto_axes``) and
    its result gets ``y``'s sharding back, so the caller sees nothing but a sharded result,
    with or without ``jax.set_mesh``. Without Explicit axes this is exactly ``T(y)``.

    Args:
      T: a map applied element-wise; ``T(y)`` has the shape of ``y``.
      y: ``[..., d]``.

    Returns:
      ``T(y)``, sharded like ``y``.
    """
    sharding = getattr(jax.typeof(y), "sharding", None)
    mesh = getattr(sharding, "mesh", None)
    if mesh is None or mesh.empty:
        return T(y)
    explicit = tuple(
        name
        for name, kind in zip(mesh.axis_names, mesh.axis_types, strict=True)
        if kind == AxisType.Explicit
    )
    if not explicit:
        return T(y)
    # T's arrays (tables built from the weights) carry the Explicit mesh too: pass them as
    # arguments so that auto_axes converts them along with y.
    run = jax.sharding.auto_axes(lambda T, y: T(y), axes=explicit, out_sharding=sharding.spec)
    with jax.sharding.use_abstract_mesh(mesh):
        return run(T, y)
