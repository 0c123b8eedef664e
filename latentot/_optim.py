"""optax, made to trace under strict dtype promotion."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

__all__ = ["promotion_clean"]


def promotion_clean(optimizer: optax.GradientTransformation) -> optax.GradientTransformation:
    """Returns ``optimizer`` with floating-point step counts: its updates trace under strict
    promotion.

    optax keeps step counts as int32 and mixes them with Python floats (Adam's bias correction
    ``b1 ** count``, the schedules), which ``jax_numpy_dtype_promotion = "strict"`` rejects.
    Counts of the parameters' floating dtype are exact up to 2**24 steps in float32, and give
    the same updates bit for bit.
    """

    def init(params):
        leaves = [x for x in jax.tree.leaves(params) if jnp.issubdtype(x.dtype, jnp.floating)]
        dtype = leaves[0].dtype if leaves else jnp.result_type(float)
        return jax.tree.map(
            lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.integer) else x,
            optimizer.init(params),
        )

    return optax.GradientTransformation(init, optimizer.update)
