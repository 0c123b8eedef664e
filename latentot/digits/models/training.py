"""The training loop of the digits models: scanned optimiser steps, compiled once per configuration.

A model is split into its graph and its parameters (``nnx.split(model, nnx.Param, ...)``). A *step*
is a frozen, keyword-only dataclass holding the static configuration (graph definition, batch size,
hyperparameters); it is hashable, so :func:`run_steps` passes it to ``jax.jit`` as a static argument
and JAX's own cache compiles each configuration once, whatever the calls' arrays and keys. Its
``init(params)`` makes the training state and its ``__call__(state, rng, data)`` does one update;
arrays (images, non-trainable model state) come in through ``data``. :class:`GradientStep` is the
common case, one optax update of a loss, and :func:`train_model` initialises and trains a model with
it. Every random draw comes from ``rng``, so a run is deterministic given its seed.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import optax
from flax import nnx

from latentot._promotion import promotion_clean

__all__ = [
    "GradientStep",
    "adam_cosine",
    "minibatch",
    "run_steps",
    "split_params",
    "train_model",
]


def split_params(model: nnx.Module) -> tuple[nnx.GraphDef, nnx.State, nnx.State]:
    """``(graphdef, params, rest)``: the trainable ``nnx.Param`` leaves and everything else."""
    return nnx.split(model, nnx.Param, ...)


def minibatch(rng: jax.Array, data: Any, batch_size: int) -> Any:
    """Draws ``batch_size`` rows uniformly with replacement.

    Args:
        rng: PRNG key.
        data: an array ``[n, ...]`` or a pytree of arrays sharing the leading axis ``n``
            (images and their labels); the same rows are drawn from each.
        batch_size: rows to draw.

    Returns:
        ``data``'s structure with leaves ``[batch_size, ...]``.
    """
    n = jax.tree.leaves(data)[0].shape[0]
    idx = jax.random.randint(rng, (batch_size,), 0, n)
    return jax.tree.map(lambda x: x[idx], data)


def adam_cosine(
    learning_rate: float, steps: int, *, weight_decay: float | None = None
) -> optax.GradientTransformation:
    """Adam (AdamW when ``weight_decay`` is given) with a cosine decay to 5% over ``steps``."""
    schedule = optax.cosine_decay_schedule(learning_rate, steps, alpha=0.05)
    if weight_decay is None:
        return optax.adam(schedule)
    return optax.adamw(schedule, weight_decay=weight_decay)


@dataclasses.dataclass(frozen=True, kw_only=True)
class GradientStep:
    """One optax update of a model's parameters: the step of the autoencoder, VAE, classifier.

    Subclasses add their hyperparameters as fields and define :meth:`loss`. The optimiser is
    Adam (AdamW when ``weight_decay`` is set) with a cosine decay over ``steps``
    (:func:`adam_cosine`). The state is ``(params, opt_state)``; ``data`` is
    ``(rest, arrays)``, the model's non-trainable state and the training arrays; the metrics
    are ``{"loss": ...}`` and the ones :meth:`loss` returns.

    Attributes:
        graphdef: the model's graph definition (``split_params(model)[0]``).
        batch_size: minibatch size.
        learning_rate: peak learning rate.
        steps: the length of the cosine decay (the number of steps of the run).
        weight_decay: AdamW weight decay, or ``None`` for Adam.
    """

    graphdef: nnx.GraphDef
    batch_size: int
    learning_rate: float
    steps: int
    weight_decay: float | None = None

    def loss(self, model: nnx.Module, rng: jax.Array, arrays: Any) -> tuple[jax.Array, dict]:
        """``(loss, metrics)`` of ``model`` on the minibatch drawn with ``rng`` from ``arrays``."""
        raise NotImplementedError

    def optimizer(self) -> optax.GradientTransformation:
        """The optax transformation (built at trace time from the static hyperparameters)."""
        return adam_cosine(self.learning_rate, self.steps, weight_decay=self.weight_decay)

    def init(self, params: Any) -> tuple[Any, Any]:
        """The training state ``(params, opt_state)``."""
        return params, promotion_clean(self.optimizer()).init(params)

    def __call__(self, state, rng, data):
        params, opt_state = state
        rest, arrays = data

        def loss(params):
            return self.loss(nnx.merge(self.graphdef, params, rest), rng, arrays)

        (value, metrics), grads = jax.value_and_grad(loss, has_aux=True)(params)
        updates, opt_state = self.optimizer().update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), {"loss": value, **metrics}


def train_model(
    rng: jax.Array,
    make_model: Callable[..., nnx.Module],
    make_step: Callable[..., GradientStep],
    arrays: Any,
    *,
    steps: int,
    progress: bool = False,
    desc: str | None = None,
) -> tuple[nnx.Module, dict[str, np.ndarray]]:
    """Initialises a model and trains its parameters with :func:`run_steps`.

    Args:
        rng: PRNG key; split into the initialisation's and the training's.
        make_model: builds the model, called as ``make_model(rngs=nnx.Rngs(key))``.
        make_step: builds the :class:`GradientStep`, called as
            ``make_step(graphdef=graphdef, steps=steps)`` (e.g. a ``functools.partial`` of the
            step class holding the other hyperparameters).
        arrays: the training arrays (a pytree), passed to the step's ``loss``.
        steps: number of steps (>= 1).
        progress: show a progress bar.
        desc: label of the progress bar.

    Returns:
        ``(model, history)``: the trained model and, for each metric, a numpy array ``[steps]``.
    """
    init_rng, train_rng = jax.random.split(rng)
    graphdef, params, rest = split_params(make_model(rngs=nnx.Rngs(init_rng)))
    (params, _), history = run_steps(
        train_rng,
        make_step(graphdef=graphdef, steps=steps),
        params,
        (rest, arrays),
        steps=steps,
        progress=progress,
        desc=desc,
    )
    return nnx.merge(graphdef, params, rest), history


def _check_step(step: Any) -> None:
    if not dataclasses.is_dataclass(step) or not step.__dataclass_params__.frozen:
        raise TypeError(
            f"a training step must be a frozen dataclass (hashable: the jit cache key), "
            f"got {type(step).__name__}"
        )


@functools.partial(jax.jit, static_argnums=0)
def _scan(step, state, keys, data):
    return jax.lax.scan(lambda s, key: step(s, key, data), state, keys)


def run_steps(
    rng: jax.Array,
    step: Any,
    params: Any,
    data: Any,
    *,
    steps: int,
    chunk_size: int = 500,
    progress: bool = False,
    desc: str | None = None,
) -> tuple[Any, dict[str, np.ndarray]]:
    """Runs ``steps`` applications of ``step`` from ``step.init(params)``, in jitted chunks.

    Args:
        rng: PRNG key; step ``i`` receives the ``i``-th of ``jax.random.split(rng, steps)``.
        step: a frozen dataclass with ``init(params) -> state`` and
            ``__call__(state, rng, data) -> (state, metrics)`` (metrics: a dict of scalars).
        params: the initial parameters (a pytree).
        data: passed unchanged to every step (a pytree of arrays, e.g. the training images).
        steps: number of steps (>= 1).
        chunk_size: steps per compiled call (a ``jax.lax.scan``); the progress bar advances
            once per chunk. The result does not depend on it.
        progress: show a tqdm progress bar.
        desc: label of the progress bar.

    Returns:
        ``(state, history)``: the final state and, for each metric, a numpy array ``[steps]``.

    Raises:
        ValueError: if ``steps`` or ``chunk_size`` is not a positive int.
        TypeError: if ``step`` is not a frozen dataclass.
    """
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    _check_step(step)
    chunk_size = min(chunk_size, steps)
    keys = jax.random.split(rng, steps)
    state = step.init(params)
    chunks = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc=desc, leave=False)
    try:
        for start in range(0, steps, chunk_size):
            stop = min(start + chunk_size, steps)
            state, metrics = _scan(step, state, keys[start:stop], data)
            chunks.append(metrics)
            if bar is not None:
                bar.update(stop - start)
                bar.set_postfix({k: f"{float(v[-1]):.4g}" for k, v in metrics.items()})
    finally:
        if bar is not None:
            bar.close()
    history = {k: np.concatenate([np.asarray(c[k]) for c in chunks]) for k in chunks[0]}
    return state, history
