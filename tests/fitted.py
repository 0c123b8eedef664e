"""Small AE-OT fits shared by the tests of the inverse map and of the matched operators on codes
(cached per process: each worker fits once)."""

import functools

import jax

from latentot import aeot
from latentot.aeot.known_maps import known_map


@functools.cache
def clusters(dim: int = 4, n: int = 2000, steps: int = 200):
    """``(sampler, true noise x [n, d], codes y = T*(x) [n, d], pair)`` on the clusters pair."""
    pair = known_map(jax.random.key(0), "clusters", dim)
    x, y = pair.sample(jax.random.key(1), n)
    sampler = aeot.fit(jax.random.key(2), y, steps=steps, batch_size=256)
    return sampler, x, y, pair


@functools.cache
def subspace(dim: int = 40, n: int = 3000, steps: int = 150):
    """The same on the subspace pair at d = 40 (``method="pursuit"``: a learned block)."""
    pair = known_map(jax.random.key(0), "subspace", dim)
    x, y = pair.sample(jax.random.key(1), n)
    sampler = aeot.fit(jax.random.key(2), y, method="pursuit", steps=steps, batch_size=256)
    return sampler, x, y, pair
