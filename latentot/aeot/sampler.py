"""The trained AE-OT sampler: ``z ↦ z + ∇D(z)`` with ``z`` drawn from the prior (Eq. 19)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from latentot.aeot.potential import Potential

__all__ = ["Sampler"]


@jax.tree_util.register_pytree_node_class
class Sampler:
    """A trained potential D together with its prior.

    The sampler is a pytree (parameters and prior are leaves, the network structure is static),
    so it can be passed through ``jax.jit``; its methods are traceable.

    Attributes:
      params: the potential's ``nnx.Param`` state.
      prior: the noise prior (see :mod:`latentot.priors`).
      potential_config: :attr:`Potential.config` of the network.
      history: training history (a dict of NumPy arrays indexed by step), or ``None``. It is not
        part of the pytree and is dropped by ``jax.tree_util`` round trips.
    """

    def __init__(self, params: nnx.State, prior: Any, potential_config: dict, history=None):
        self.params = params
        self.prior = prior
        self.potential_config = dict(potential_config)
        self.history = history
        self._graphdef = _graphdef(tuple(sorted(self.potential_config.items())))

    @classmethod
    def from_potential(cls, potential: Potential, prior: Any, history=None) -> Sampler:
        """A sampler from an NNX :class:`Potential` (its current parameters) and a prior."""
        _, params = nnx.split(potential, nnx.Param)
        return cls(params, prior, potential.config, history=history)

    # -- pytree ---------------------------------------------------------------------------------
    def tree_flatten(self):
        return (self.params, self.prior), tuple(sorted(self.potential_config.items()))

    @classmethod
    def tree_unflatten(cls, aux, children):
        params, prior = children
        return cls(params, prior, dict(aux))

    # -- evaluation -----------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        """Latent dimension d."""
        return int(self.potential_config["dim"])

    @property
    def model(self) -> Potential:
        """The potential as an NNX module (a fresh object sharing these parameters)."""
        return nnx.merge(self._graphdef, self.params)

    def potential(self, z: jax.Array) -> jax.Array:
        """D(z): ``[..., d] → [...]``."""
        return self.model(jnp.asarray(z))

    def transport(self, z: jax.Array) -> jax.Array:
        """Maps given noise to codes, ``z + ∇D(z)``: ``[..., d] → [..., d]``.

        Jittable and vmappable (a single point ``[d]`` is accepted).
        """
        z = jnp.asarray(z)
        g = self.model.gradient(z)
        return z + g.astype(z.dtype)

    def sample(self, rng: jax.Array, n: int, dtype: Any = None) -> jax.Array:
        """Draws ``n`` codes ``[n, d]``: ``z + ∇D(z)`` with ``z ~ prior``.

        Jittable with ``n`` static.
        """
        dtype = dtype if dtype is not None else self.potential_config["param_dtype"]
        z = self.prior.sample(rng, (n, self.dim), dtype)
        return self.transport(z)

    def __repr__(self) -> str:
        return f"Sampler(prior={self.prior!r}, potential={self.potential_config!r})"


_GRAPHDEFS: dict = {}


def _graphdef(config_items: tuple):
    """The (cached) NNX graph definition of a potential with the given configuration."""
    gd = _GRAPHDEFS.get(config_items)
    if gd is None:
        cfg = dict(config_items)
        abstract = nnx.eval_shape(lambda: Potential(**cfg, rngs=nnx.Rngs(0)))
        gd, _ = nnx.split(abstract, nnx.Param)
        _GRAPHDEFS[config_items] = gd
    return gd


def init_params(config: dict, seed: int | jax.Array) -> nnx.State:
    """Initial ``nnx.Param`` state of a potential with the given configuration."""
    model = Potential(**config, rngs=nnx.Rngs(seed))
    _, params = nnx.split(model, nnx.Param)
    return params
