"""One context for third-party code that mixes dtypes internally.

latentot's own arithmetic is promotion-clean (the tests run with
``jax_numpy_dtype_promotion = "strict"``). ott-jax's Sinkhorn (``marginal_error`` raises an
int32 array to a float power), optax's Hungarian algorithm and optax's Adam (bias correction
mixes a Python float with the int32 step count) are not, so calls into them run under standard
promotion. Every array latentot hands them already has the caller's dtype.
"""

import jax

__all__ = ["third_party_promotion"]


def third_party_promotion():
    """``jax.numpy_dtype_promotion("standard")``, for calls into ott-jax and optax only."""
    return jax.numpy_dtype_promotion("standard")
