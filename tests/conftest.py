"""Test configuration: strict dtype promotion, as in equinox's test suite.

Under ``jax_numpy_dtype_promotion = "strict"`` any implicit float32/float64 or int/float mix in
the library raises, so a test run proves the library keeps the dtype it was given.
"""

import jax
import pytest

jax.config.update("jax_numpy_dtype_promotion", "strict")


@pytest.fixture
def x64():
    """Runs a test with float64 enabled, through JAX's scoped context manager.

    ``jax.enable_x64`` is the supported way to switch precision for a block; flipping the global
    flag with ``jax.config.update`` in the middle of a process can leave cached computations of
    the other precision behind for later tests in the same worker.
    """
    with jax.enable_x64(True):
        yield


def pytest_collection_modifyitems(config, items):
    """Runs the modules that hold ``heavy`` tests first, each module's tests still together and
    in order (their module-scoped fixtures are then built once). Long tasks first is the classic
    greedy schedule: with two workers the short tests fill in behind the long ones, instead of a
    long test finishing alone at the end."""
    heavy = {item.path for item in items if item.get_closest_marker("heavy") is not None}
    items.sort(key=lambda item: item.path not in heavy)
