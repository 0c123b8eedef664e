"""A plain multilayer perceptron, the building block of every digits model."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import jax
from flax import nnx

__all__ = ["MLP"]


class MLP(nnx.Module):
    """Dense layers with a hidden activation; the last layer is linear.

    Args:
        sizes: layer widths ``(in, hidden..., out)``; at least two entries.
        rngs: NNX random streams for the initialisation.
        activation: applied after every layer except the last.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        *,
        rngs: nnx.Rngs,
        activation: Callable[[jax.Array], jax.Array] = nnx.relu,
    ):
        sizes = tuple(int(s) for s in sizes)
        if len(sizes) < 2 or min(sizes) < 1:
            raise ValueError(f"sizes must hold at least two positive widths, got {sizes}")
        self.sizes = sizes
        self.activation = activation
        self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in itertools.pairwise(sizes)])

    def hidden(self, x: jax.Array) -> jax.Array:
        """Activations of the last hidden layer, ``[..., sizes[-2]]``."""
        for layer in self.layers[:-1]:
            x = self.activation(layer(x))
        return x

    def __call__(self, x: jax.Array) -> jax.Array:
        """Maps ``[..., sizes[0]]`` to ``[..., sizes[-1]]``."""
        return self.layers[-1](self.hidden(x))
