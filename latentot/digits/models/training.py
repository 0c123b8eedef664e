"""Shared training loop: jitted, scanned optimisation steps over NNX models' parameters.

The models in :mod:`latentot.digits.models` train functionally. A model is split into its graph and
its parameters (``nnx.split(model, nnx.Param, ...)``); a pure ``step(state, rng, data)`` updates a
pytree of parameters and optimiser states; :func:`run_steps` runs it with ``jax.lax.scan`` in jitted
chunks (one compiled call per chunk, so the Python overhead per step is nil on CPU) and collects the
per-step metrics. Every random draw comes from ``rng``, so a run is deterministic given its seed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

__all__ = [
    "Step",
    "gradient_step",
    "minibatch",
    "resolve_steps",
    "run_steps",
    "split_params",
]

#: ``step(state, rng, data) -> (state, metrics)``, metrics a dict of scalars.
Step = Callable[[Any, jax.Array, Any], tuple[Any, dict[str, jax.Array]]]


def resolve_steps(steps: int | None, *, fast: bool, fast_steps: int, default_steps: int) -> int:
    """The number of steps to run: ``steps`` if given, otherwise the fast or default budget."""
    if steps is None:
        steps = fast_steps if fast else default_steps
    steps = int(steps)
    if steps < 1:
        raise ValueError(f"steps must be positive, got {steps}")
    return steps


def split_params(model: nnx.Module) -> tuple[nnx.GraphDef, nnx.State, nnx.State]:
    """``(graphdef, params, rest)``: the trainable ``nnx.Param`` leaves and everything else."""
    return nnx.split(model, nnx.Param, ...)


def minibatch(rng: jax.Array, x: jax.Array, batch_size: int) -> jax.Array:
    """Draws ``batch_size`` rows of ``x`` ``[n, ...]`` uniformly with replacement."""
    idx = jax.random.randint(rng, (batch_size,), 0, x.shape[0])
    return x[idx]


def gradient_step(
    loss_fn: Callable[[Any, jax.Array, Any], tuple[jax.Array, dict[str, jax.Array]]],
    optimizer: optax.GradientTransformation,
) -> Step:
    """Builds a :data:`Step` doing one optimiser update of ``loss_fn``.

    Args:
        loss_fn: ``loss_fn(params, rng, data) -> (loss, metrics)``; differentiated in ``params``.
        optimizer: the optax transformation.

    Returns:
        ``step((params, opt_state), rng, data) -> ((params, opt_state), {"loss": ..., **metrics})``.
        Initialise the state as ``(params, optimizer.init(params))``.
    """

    def step(state, rng, data):
        params, opt_state = state
        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, rng, data)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return (params, opt_state), {"loss": loss, **metrics}

    return step


def minimize(
    rng: jax.Array,
    params: Any,
    loss_fn: Callable[[Any, jax.Array, Any], tuple[jax.Array, dict[str, jax.Array]]],
    optimizer: optax.GradientTransformation,
    data: Any,
    *,
    steps: int,
    progress: bool = False,
    desc: str | None = None,
) -> tuple[Any, dict[str, np.ndarray]]:
    """Runs ``steps`` updates of ``optimizer`` on ``loss_fn`` from ``params``.

    The common loop of the models: :func:`gradient_step` driven by :func:`run_steps`.

    Returns:
        ``(params, history)``: the trained parameters and the per-step metrics.
    """
    (params, _), history = run_steps(
        rng,
        (params, optimizer.init(params)),
        gradient_step(loss_fn, optimizer),
        data,
        steps=steps,
        progress=progress,
        desc=desc,
    )
    return params, history


def run_steps(
    rng: jax.Array,
    state: Any,
    step: Step,
    data: Any,
    *,
    steps: int,
    chunk_size: int = 500,
    progress: bool = False,
    desc: str | None = None,
) -> tuple[Any, dict[str, np.ndarray]]:
    """Runs ``steps`` applications of ``step`` under ``jax.lax.scan``, in jitted chunks.

    Args:
        rng: PRNG key; step ``i`` receives the ``i``-th of ``jax.random.split(rng, steps)``.
        state: the initial training state (a pytree).
        step: ``step(state, rng, data) -> (state, metrics)``.
        data: passed unchanged to every step (a pytree of arrays, e.g. the training images).
        steps: number of steps.
        chunk_size: steps per compiled call; the progress bar advances once per chunk.
        progress: show a tqdm progress bar.
        desc: label of the progress bar.

    Returns:
        ``(state, history)``: the final state and, for each metric, a numpy array ``[steps]``.
    """
    steps = int(steps)
    chunk_size = max(1, min(int(chunk_size), steps))
    keys = jax.random.split(rng, steps)

    @jax.jit
    def run_chunk(state, keys, data):
        def body(state, key):
            return step(state, key, data)

        return jax.lax.scan(body, state, keys)

    chunks = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc=desc, leave=False)
    try:
        for start in range(0, steps, chunk_size):
            stop = min(start + chunk_size, steps)
            # optax mixes Python floats with int32 step counts (Adam's bias correction
            # ``b1 ** count``), which strict dtype promotion rejects: trace with standard rules.
            with jax.numpy_dtype_promotion("standard"):
                state, metrics = run_chunk(state, keys[start:stop], data)
            chunks.append(metrics)
            if bar is not None:
                bar.update(stop - start)
                bar.set_postfix({k: f"{float(v[-1]):.4g}" for k, v in metrics.items()})
    finally:
        if bar is not None:
            bar.close()
    history = {
        k: np.concatenate([np.asarray(jnp.atleast_1d(c[k])) for c in chunks]) for k in chunks[0]
    }
    return state, history
