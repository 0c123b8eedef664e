"""Test configuration: strict dtype promotion, as in equinox's test suite.

Under ``jax_numpy_dtype_promotion = "strict"`` any implicit float32/float64 or int/float mix in
the library raises, so a test run proves the library keeps the dtype it was given.
"""

import jax
import pytest

jax.config.update("jax_numpy_dtype_promotion", "strict")


@pytest.fixture
def x64():
    """Runs a test with float64 enabled, restoring the previous setting afterwards."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", previous)
