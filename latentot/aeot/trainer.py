"""The AE-OT training core, optax style: a frozen :class:`Trainer` with ``init`` and ``step``.

:func:`latentot.aeot.fit` drives it (chunks of steps on device, checkpoints, callbacks), but it
is public so that a user can write their own loop::

    trainer = aeot.Trainer(graphdef=nnx.graphdef(potential), optimizer=optax.adam(1e-3))
    state = trainer.init(rng, potential, prior)
    for _ in range(1000):
        state, metrics = jax.jit(trainer.step)(state, codes)   # trainer is a static pytree
    sampler = trainer.sampler(state)

The trainer holds only configuration (a static pytree: hashable, so ``jax.jit`` caches one
compilation per configuration); everything that changes is in the :class:`TrainState`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from latentot._promotion import third_party_promotion
from latentot.aeot.losses import PENALTIES, regression_loss
from latentot.aeot.lp import BatchLPSolver
from latentot.aeot.sampler import Sampler
from latentot.aeot.sampler import transport as _transport
from latentot.aeot.targets import METHODS, debiased_targets, minibatch_targets

__all__ = ["TrainState", "Trainer", "default_optimizer"]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrainState:
    """Everything that changes during training (a pytree).

    Attributes:
      params: the potential's ``nnx.Param`` state (what the optimiser updates).
      rest: the potential's other variables (e.g. the fixed Bures base).
      opt_state: the optimiser state.
      key: PRNG key of the run; step ``s`` draws with ``fold_in(key, s)``.
      step: [] int32, the number of steps taken.
      prior: the noise prior.
      average: the exponential moving average of ``params`` before bias correction (zeros at
        step 0), or ``None`` when the trainer keeps no average (see
        :meth:`Trainer.averaged_params`).
    """

    params: Any
    rest: Any
    opt_state: Any
    key: jax.Array
    step: jax.Array
    prior: Any
    average: Any = None


@functools.cache  # equal settings give the same object, so fit calls share one compilation
def default_optimizer(
    learning_rate: float = 1e-3,
    steps: int = 1000,
    final_lr_fraction: float = 0.01,
    horizon: int | None = None,
) -> optax.GradientTransformation:
    """Adam (β1 = 0.5, β2 = 0.999, as in the paper) with a cosine decay of the learning rate
    from ``learning_rate`` to ``final_lr_fraction × learning_rate`` over ``steps``, or, with
    ``horizon``, over ``min(steps, horizon)`` steps and constant at the final rate after."""
    schedule = default_schedule(learning_rate, steps, final_lr_fraction, horizon)
    return optax.adam(schedule, b1=0.5, b2=0.999)


def default_schedule(learning_rate: float, steps: int, final_lr_fraction=0.01, horizon=None):
    """The learning rate of :func:`default_optimizer` as a function of the step (an
    ``optax.Schedule``)."""
    decay = steps if horizon is None else min(steps, horizon)
    schedule = optax.cosine_decay_schedule(learning_rate, decay, alpha=final_lr_fraction)
    if decay < steps:
        final = optax.constant_schedule(learning_rate * final_lr_fraction)
        schedule = optax.join_schedules([schedule, final], [decay])
    return schedule


_DEFAULT_LP = BatchLPSolver()


def check_ema_decay(value) -> float:
    """``value`` as a float in [0, 1), else a ``ValueError`` naming ``ema_decay``."""
    ok = isinstance(value, (int, float, np.floating)) and not isinstance(value, bool)
    if not ok or not 0.0 <= value < 1.0:
        raise ValueError(f"ema_decay must be a number in [0, 1), got {value!r}")
    return float(value)


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True, kw_only=True)
class Trainer:
    """One AE-OT training step, as a frozen configuration.

    Attributes:
      graphdef: the potential's ``nnx.GraphDef`` (``nnx.graphdef(module)``); any NNX module
        ``[m, d] → [m]`` works.
      optimizer: an ``optax.GradientTransformation``.
      lp: the batch LP solver, ``lp(x, y)`` returning an object with ``assignment`` (and ``phi``
        for ``"minibatch"``), default :class:`~latentot.aeot.BatchLPSolver` ``()``; must be
        jittable and hashable. ``"debiased"`` uses only the assignments and solves with the
        solver's ``for_assignment()`` when it has one
        (:meth:`~latentot.aeot.BatchLPSolver.for_assignment`: the same optimal permutations,
        fewer Sinkhorn iterations).
      method: ``"debiased"`` or ``"minibatch"`` (see :mod:`latentot.aeot.targets`).
      batch_size: LP size m (noise and codes per step, per device with a mesh).
      lam: weight λ of the gradient penalty (see :mod:`latentot.aeot.losses`).
      penalty: ``"vector"``, ``"vector_l1"`` or ``"norm"``.
      scale: length scale of the codes that makes the loss scale-free (see
        :func:`~latentot.aeot.losses.regression_loss`); :func:`~latentot.aeot.fit` passes the
        codes' spread.
      axes: mesh axis names when the step runs per device inside ``shard_map`` (gradients and
        statistics are then averaged over them), else ``None``.
      ema_decay: keep an exponential moving average of the parameters with this decay per
        step (bias-corrected, so it holds no weight on the initial parameters); the sampler
        of a state (:meth:`sampler`) then uses the average, while the steps themselves
        (the pushed noise of ``"debiased"``) use the current parameters. ``0`` keeps no
        average. The debiased targets are noisy, and the last iterate of a run wanders around
        the map they define; the average settles on it (``benchmarks/README.md``).
    """

    graphdef: Any
    optimizer: optax.GradientTransformation
    lp: Callable = _DEFAULT_LP
    method: str = "debiased"
    batch_size: int = 512
    lam: float = 1.0
    penalty: str = "vector"
    scale: float = 1.0
    axes: tuple[str, ...] | None = None
    ema_decay: float = 0.0

    def __post_init__(self):
        check_ema_decay(self.ema_decay)
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.penalty not in PENALTIES:
            raise ValueError(f"penalty must be one of {PENALTIES}, got {self.penalty!r}")

    def init(self, rng: jax.Array, potential: nnx.Module, prior: Any) -> TrainState:
        """The state before step 0: copies of the module's current variables (the module itself
        is left untouched, also when a jitted loop donates the state) and a fresh optimiser."""
        _, params, rest = nnx.split(potential, nnx.Param, ...)
        params, rest = jax.tree_util.tree_map(jnp.copy, (params, rest))
        return TrainState(
            params=params,
            rest=rest,
            opt_state=_init_optimizer(self.optimizer, params),
            key=rng,
            step=jnp.zeros((), jnp.int32),
            prior=prior,
            average=jax.tree_util.tree_map(jnp.zeros_like, params) if self.ema_decay else None,
        )

    def model(self, state: TrainState, *, averaged: bool = False) -> nnx.Module:
        """The potential with the state's variables (``averaged``: with
        :meth:`averaged_params` instead of the current parameters)."""
        params = self.averaged_params(state) if averaged else state.params
        return nnx.merge(self.graphdef, params, state.rest)

    def averaged_params(self, state: TrainState) -> Any:
        """The bias-corrected moving average of the parameters,
        ``average / (1 − ema_decay^step)``; the current parameters when the trainer keeps no
        average or no step was taken."""
        if state.average is None or not self.ema_decay:
            return state.params
        step = jnp.maximum(state.step, 1)
        debias = 1.0 - jnp.asarray(self.ema_decay, jnp.float32) ** step.astype(jnp.float32)

        def correct(avg, p):
            return jnp.where(state.step > 0, avg / debias.astype(avg.dtype), p)

        return jax.tree_util.tree_map(correct, state.average, state.params)

    def sampler(self, state: TrainState, history=None, *, dim: int | None = None) -> Sampler:
        """The :class:`~latentot.aeot.Sampler` of a state, with the averaged parameters when
        the trainer keeps an average (``dim``: the latent dimension, for a user module that
        does not say)."""
        model = self.model(state, averaged=True)
        return Sampler.from_potential(model, state.prior, history, dim=dim)

    def step(self, state: TrainState, codes: jax.Array) -> tuple[TrainState, dict]:
        """One training step on ``codes`` [N, d] (the local shard with a mesh).

        Returns:
          ``(new_state, metrics)``: ``metrics`` a dict of scalars (``loss``, ``value_loss``,
          ``penalty_loss``, ``map_error``, ``grad_norm``, ``finite`` and the LP diagnostics).
          The update is applied whatever the loss; :func:`~latentot.aeot.fit` checks
          ``finite`` and keeps the last good state.
        """
        m = self.batch_size
        if codes.ndim != 2 or codes.shape[0] < m:
            raise ValueError(f"codes must be [N, d] with N >= batch_size = {m}, got {codes.shape}")
        n_codes, d = codes.shape
        key = jax.random.fold_in(state.key, state.step)
        if self.axes is not None:
            key = jax.random.fold_in(key, jax.lax.axis_index(self.axes))
        k_noise, k_batch, k_self = jax.random.split(key, 3)
        x = state.prior.sample(k_noise, (m, d), codes.dtype).astype(codes.dtype)
        if n_codes == m:
            y = codes
        elif n_codes <= 16 * m:
            y = codes[jax.random.choice(k_batch, n_codes, (m,), replace=False)]
        else:  # sampling without replacement would sort all N codes each step
            y = codes[jax.random.randint(k_batch, (m,), 0, n_codes)]
        model = self.model(state)
        if self.method == "minibatch":
            phi, target, stats = minibatch_targets(self.lp, x, y)
        else:
            x_self = state.prior.sample(k_self, (m, d), codes.dtype).astype(codes.dtype)
            u = jax.lax.stop_gradient(_transport(model, x))
            u_self = jax.lax.stop_gradient(_transport(model, x_self))
            phi_x = 0.5 * jnp.sum(x * x, axis=-1) + model(x).astype(x.dtype)
            phi_x = jax.lax.stop_gradient(phi_x)
            phi, target, stats = debiased_targets(self.lp, x, u, u_self, y, phi_x)

        def loss_fn(params):
            m_ = nnx.merge(self.graphdef, params, state.rest)
            return regression_loss(
                m_, x, phi, target, lam=self.lam, penalty=self.penalty, scale=self.scale
            )

        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        stats = {"loss": loss, **aux, **stats}
        if self.axes is not None:  # per-device gradients (check_vma=False): average them once
            grads = jax.lax.pmean(grads, self.axes)
            stats = {k: _mean_over(v, self.axes) for k, v in stats.items()}
        stats["grad_norm"] = optax.tree.norm(grads)
        with third_party_promotion():  # optax's Adam mixes a Python float and the int32 count
            updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        average = state.average
        if average is not None and self.ema_decay:
            decay = self.ema_decay
            average = jax.tree_util.tree_map(
                lambda a, p: decay * a + (1.0 - decay) * p.astype(a.dtype), average, params
            )
        leaves = [jnp.all(jnp.isfinite(g)) for g in jax.tree_util.tree_leaves(grads)]
        stats["finite"] = jnp.isfinite(loss) & jnp.all(jnp.stack(leaves))
        new = dataclasses.replace(
            state,
            params=params,
            opt_state=opt_state,
            average=average,
            step=state.step + jnp.ones_like(state.step),
        )
        return new, stats


def _init_optimizer(optimizer, params):
    with third_party_promotion():
        return optimizer.init(params)


def _mean_over(value, axes):
    """The devices' mean of a per-device statistic (``all`` for booleans); replicated."""
    if value.dtype == jnp.bool_:
        return jax.lax.pmin(value.astype(jnp.int32), axes).astype(jnp.bool_)
    return jax.lax.pmean(value, axes)
