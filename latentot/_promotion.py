"""Third-party code under strict dtype promotion: one context, and optax made strict-clean.

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

import jax
import jax.numpy as jnp
import optax

__all__ = ["promotion_clean", "third_party_promotion"]


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

    def init(params):
        leaves = [x for x in jax.tree.leaves(params) if jnp.issubdtype(x.dtype, jnp.floating)]
        dtype = leaves[0].dtype if leaves else jnp.result_type(float)
        return jax.tree.map(
            lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.integer) else x,
            optimizer.init(params),
        )

    return optax.GradientTransformation(init, optimizer.update)
