"""Test configuration: strict dtype promotion, as in equinox's test suite.

Under ``jax_numpy_dtype_promotion = "strict"`` any implicit float32/float64 or int/float mix in
the library raises, so a test run proves the library keeps the dtype it was given.
"""

import os
import shutil
import tempfile

import jax
import pytest

jax.config.update("jax_numpy_dtype_promotion", "strict")

_CACHE_ENV = "JAX_COMPILATION_CACHE_DIR"


def pytest_configure(config):
    """One JAX compilation cache for the whole run, shared by the xdist workers and by the CLI
    and notebook subprocesses (they inherit the environment): the same training steps and maps
    are compiled in many processes. The cache starts empty every run and is removed at its end,
    so no run is faster for an earlier one."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None and _CACHE_ENV not in os.environ:
        path = tempfile.mkdtemp(prefix="latentot-test-jax-cache-")
        os.environ[_CACHE_ENV] = path
        config._latentot_jax_cache = path
    jax.config.update("jax_compilation_cache_dir", os.environ[_CACHE_ENV])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)


def pytest_unconfigure(config):
    path = getattr(config, "_latentot_jax_cache", None)
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)
        os.environ.pop(_CACHE_ENV, None)


@pytest.fixture
def x64():
    """Runs a test with float64 enabled, through JAX's scoped context manager.

    ``jax.enable_x64`` is the supported way to switch precision for a block; flipping the global
    flag with ``jax.config.update`` in the middle of a process can leave cached computations of
    the other precision behind for later tests in the same worker.
    """
    with jax.enable_x64(True):
        yield
