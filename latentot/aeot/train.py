"""Training an AE-OT sampler on latent codes: :func:`fit` drives a :class:`~latentot.aeot.Trainer`.

``fit`` validates the codes, builds the default potential (max-of-heads network on a Bures base
fitted to the codes), runs the trainer's steps in jitted chunks on device (one host sync per
chunk: the callback, the divergence check, held-out metrics and checkpoints), and returns the
:class:`~latentot.aeot.Sampler`.

Sign convention of the value term (``method="minibatch"``): the LP constraint
H_j − H_i ≤ ½‖x_i − y_j‖² is tight on the matched pairs, so the exact batch potential
H(x) = max_j (H_j − ½‖x − y_j‖²) has ∇H(x_i) = y_σ(i) − x_i. D therefore regresses +H (not −H)
and ``T(x) = x + ∇D(x)`` maps noise to codes; ``tests/aeot/test_fit.py`` checks this numerically.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from latentot import priors as _priors
from latentot.aeot import checkpoint as _ckpt
from latentot.aeot import pursuit as _pursuit
from latentot.aeot.bures import bures_map
from latentot.aeot.certificate import transport_gap
from latentot.aeot.losses import PENALTIES
from latentot.aeot.lp import BatchLPSolver
from latentot.aeot.potential import Potential
from latentot.aeot.sampler import Sampler
from latentot.aeot.sampler import transport as _transport
from latentot.aeot.targets import METHODS
from latentot.aeot.trainer import Trainer, TrainState, check_ema_decay, default_optimizer

__all__ = ["TrainingDivergedError", "default_potential", "fit", "resolve_method"]

#: ``method="auto"`` (the default) trains with Liu et al.'s ``"minibatch"`` algorithm on codes of
#: at most this dimension and with ``"debiased"`` above it. In the plane a batch LP between
#: noise and codes is close to the optimal map, while the debiased targets settle on a biased
#: map of separated clusters; from d = 3 on the minibatch assignments are too far from the map
#: for Gaussian codes, and a constant column keeps a spread without the debiased method's Bures
#: base. The measurements behind the choice are in ``benchmarks/README.md``.
AUTO_MINIBATCH_MAX_DIM = 2

#: ``method="auto"`` trains with ``"pursuit"`` (:mod:`latentot.aeot.pursuit`: the codes'
#: non-Gaussian block learned by ``"debiased"``, the rest mapped by Gaussianisation layers)
#: on codes of at least this dimension, under the standard Gaussian prior. From d = 33 its
#: spectrum rules find the known-map pairs' cluster blocks over their bulk (d = 64: clusters
#: 0.61, mixture 1.79 against the debiased method's 2.98 and 2.97) and the layers meet the
#: natural-image patches' floors at d = 64; below, a flat bulk is too short to tell spikes from
#: it (the clusters pair at d = 16 has no gap) and the debiased method keeps the digits demo's
#: Fréchet distance at d = 32 (``benchmarks/README.md``).
AUTO_PURSUIT_MIN_DIM = 33

#: The debiased method's potential (and so the learned block of ``method="pursuit"``) uses
#: softplus units. The gradient of a ReLU network is piecewise constant, so ``x + ∇D(x)``
#: jumps across every hyperplane of every unit: its image has cracks everywhere and Newton
#: cannot invert it. Softplus makes the map smooth inside each head's cell. Sharper
#: units, softplus(βx) / β, learn faster in the first hundred steps but leave training codes
#: out of the map's image again. Measurements in ``benchmarks/README.md``.
DEBIASED_ACTIVATION = "softplus"

#: The debiased method's heads are combined by a log-sum-exp of this width (in units of
#: ``D / output_scale``, i.e. of the codes' spread) instead of a hard maximum: with a hard
#: maximum the map jumps wherever two heads meet, also where the codes are not separated, and
#: the training codes in those jumps' gaps are in no cell's image. The width is small enough to
#: keep the jumps that separate clusters (``benchmarks/README.md``).
DEBIASED_TEMPERATURE = 0.02

#: Each method's defaults: LP ``batch_size``, ``penalty``, the parameter average's
#: ``ema_decay`` (:class:`~latentot.aeot.Trainer`) and the potential's settings on top of
#: :class:`Potential`'s own defaults (reasons measured in ``benchmarks/README.md``).
#:
#: * ``"debiased"``: the Bures base, heads that start close to it (``head_spread`` 0.1: random
#:   initial cones are a perturbation of the Gaussian map that training must undo),
#:   per-head curvature up to :data:`DEBIASED_CURVATURE_MAX_DIM`, and up to
#:   :data:`DEBIASED_QUADRATIC_MAX_DIM` a learnable quadratic shared by the heads; the squared
#:   (mean) penalty; the sampler returns the moving average of the parameters (the last
#:   iterate wanders with the noise of the debiased targets).
#: * ``"minibatch"``: the max-of-heads network (heads on random cones, no base) with one
#:   learnable quadratic shared by the heads (``quadratic``: the linear part of the map; a
#:   ReLU network's gradient is piecewise constant, and without it Gaussian codes in the plane
#:   measured an L2-UVP of 3.05 against the linear map's 0.001), the median penalty
#:   ``"vector_l1"`` (near a jump of the map the targets come from two clusters; the mean lies
#:   between them, the median on one side), batches of 1024, and 32 heads (with 16, one fit
#:   seed in four left 6.5% of the eight Gaussians' samples between two clusters).
METHOD_DEFAULTS = {
    "debiased": {
        "batch_size": 512,
        "penalty": "vector",
        "ema_decay": 0.998,
        "potential": {
            "base": True,
            "head_spread": 0.1,
            "curvature": True,
            "activation": DEBIASED_ACTIVATION,
            "temperature": DEBIASED_TEMPERATURE,
        },
    },
    "minibatch": {
        "batch_size": 1024,
        "penalty": "vector_l1",
        "ema_decay": 0.0,
        "potential": {"quadratic": True, "heads": 32},
    },
}

#: The debiased method's default potential has a learnable quadratic shared by the heads
#: (``Potential(quadratic=True)``) on codes of at most this dimension: it lets the linear part
#: of the map leave the codes' Gaussian map, to which the fixed Bures base alone held it (a
#: mixture pair measured 15.4 without it and 2.74 with it at d = 3, the linear map 12.6). Above,
#: its d(d + 1)/2 parameters follow the noise of the debiased targets: at d = 64 the pushed
#: covariance came out 14–16% off, at d = 128 Gaussian codes measured 2.0 instead of 0.14
#: (``benchmarks/README.md``).
DEBIASED_QUADRATIC_MAX_DIM = 16


#: The debiased method's default potential has per-head curvature (``Potential(curvature=True)``)
#: on codes of at most this dimension only ("more training makes it worse" above it).
#: A head's curvature adds ``½ γ_k ‖x‖²`` to it, so which head owns a noise point x, i.e. which
#: cluster x goes to, depends on ‖x‖², and in d dimensions ‖x‖² varies by about √(2d) between
#: points through the many directions in which the codes are plain Gaussian. Training spreads
#: the γ_k apart and never stops doing so (a d = 64 subspace pair: γ_k · rate from
#: [−0.15, −0.02] at step 1000 to [−0.22, 0.00] at 3000), so the cluster a point goes to comes
#: to depend on those irrelevant directions: resampling only the 56 Gaussian coordinates of a
#: test point moved its image inside the 8-dim cluster subspace by more than 2 (a cluster
#: switch) for 8% of points at step 1000, 17% at 2000 and 43% at 3000 (0 for T*), and the
#: L2-UVP went 3.38 → 8.84 along a 3000-step run while the held-out divergence kept falling
#: (0.55 → 0.20: the pushed law stays right, the map drifts to a worse one). Without the
#: curvature the same run measured 3.11 at step 2000 and 3.82 at 3000 (``benchmarks/README.md``).
#: In the plane the curvature is what lets cells shrink to their clusters (eight Gaussians),
#: and at d = 8 it kept the digits demo's Fréchet distance (5.00 ± 1.03 with it, 5.54 ± 1.67
#: without). At d = 16 it still drifted (the subspace pair, 8 Gaussian directions: 3.92 at 1000
#: steps, 4.94 at 3000; without it 1.90 and 2.05), so codes above d = 8 train without it.
DEBIASED_CURVATURE_MAX_DIM = 8

#: ``method="pursuit"`` trains its learned block (k ≤ this) with the per-head curvature: the
#: block holds the codes' non-Gaussian directions only, so none of the Gaussian directions
#: whose ‖x‖² made the cell choice drift (above) is there (spiked pair d = 64, its 5-dim block:
#: 0.584 with it, 0.619 without).
PURSUIT_BLOCK_CURVATURE_MAX_DIM = 16

#: ``fit``'s default optimizer (``optimizer=None``) decays the debiased method's learning rate
#: over at most this many steps and holds it at the final rate (1% of ``learning_rate``) after
#: (``default_optimizer(..., horizon=)``); runs up to this length are unchanged.
#: Every map that pushes the noise onto the codes is a fixed point of the debiased
#: targets, and the heads keep drifting along them: the pushed law stays right while the map
#: gets worse, so held-out codes cannot see it. Without the curvature (above), 3000 steps with
#: the cosine spread over all of them still measured 2.88 → 5.68 (clusters) and 2.97 → 4.39
#: (mixture) against 1000 steps at d = 64, and a third of the rate over the 3000 steps 5.57 on
#: the mixture; with this horizon 3000 steps measured 3.39 (mixture), 2.82 (clusters) and 2.75
#: (subspace) against 2.97, 2.88 and 3.46 at 1000 (``benchmarks/README.md``). The drift along
#: those fixed points is now also held back by the targets' cyclical-monotonicity rearrangement
#: (:func:`~latentot.aeot.targets.debiased_targets`).
DEBIASED_SCHEDULE_STEPS = 1000


def default_potential(method: str, dim: int) -> dict:
    """The keyword arguments of :class:`Potential` that ``fit`` uses by default for ``method``
    (``"debiased"`` or ``"minibatch"``) on codes of dimension ``dim`` (before the
    ``output_scale``, ``param_dtype`` and ``rngs`` that ``fit`` adds)."""
    kwargs = dict(METHOD_DEFAULTS[method]["potential"])
    if method == "debiased":
        kwargs["quadratic"] = dim <= DEBIASED_QUADRATIC_MAX_DIM
        kwargs["curvature"] = dim <= DEBIASED_CURVATURE_MAX_DIM
    return kwargs


#: The penalty of each method when ``penalty=None``.
DEFAULT_PENALTY = {method: v["penalty"] for method, v in METHOD_DEFAULTS.items()}


def resolve_method(method: str, dim: int, *, prior: Any = None, mesh: Mesh | None = None) -> str:
    """The training method that :func:`fit` uses for ``method`` on codes of dimension ``dim``.

    Args:
      method: ``"auto"``, ``"debiased"``, ``"minibatch"`` or ``"pursuit"``.
      dim: the codes' dimension d.
      prior: the noise prior that ``fit`` gets (``None``: the default ``Gaussian()``).
      mesh: the ``mesh`` that ``fit`` gets.

    Returns:
      ``method`` itself, or for ``"auto"``: ``"minibatch"`` when ``dim <=``
      :data:`AUTO_MINIBATCH_MAX_DIM`; ``"pursuit"`` when ``dim >=``
      :data:`AUTO_PURSUIT_MIN_DIM` and the prior is the standard Gaussian (the frame needs a
      rotation-invariant prior), with or without a mesh, also one across processes (every
      statistic of the frame is reduced over the mesh, its learned block trains data-parallel
      on it); else ``"debiased"``.

    Raises:
      ValueError: an unknown ``method``.
    """
    if method == "auto":
        if dim <= AUTO_MINIBATCH_MAX_DIM:
            return "minibatch"
        if dim >= AUTO_PURSUIT_MIN_DIM and _is_standard_gaussian(prior):
            return "pursuit"
        return "debiased"
    if method not in (*METHODS, "pursuit"):
        raise ValueError(f"method must be one of {('auto', *METHODS, 'pursuit')}, got {method!r}")
    return method


def _one_process(mesh: Mesh | None) -> bool:
    """No mesh, or a mesh whose devices all belong to this process."""
    return mesh is None or all(d.process_index == jax.process_index() for d in mesh.devices.flat)


def _is_standard_gaussian(prior) -> bool:
    """``prior`` is ``None`` (the default) or ``Gaussian(0, 1)`` of any dimension."""
    if prior is None:
        return True
    return (
        isinstance(prior, _priors.Gaussian)
        and getattr(prior, "dim", None) is None
        and float(np.asarray(prior.loc)) == 0.0
        and float(np.asarray(prior.scale)) == 1.0
    )


class TrainingDivergedError(FloatingPointError):
    """A training step produced a NaN or infinite loss.

    Attributes:
      step: the (0-based) step whose loss was not finite.
      sampler: the sampler with the last good parameters (those before ``step``), with
        ``history`` up to ``step - 1``.
    """

    def __init__(self, step: int, loss: float, sampler: Sampler):
        super().__init__(
            f"AE-OT training diverged: the loss at step {step} is {loss}; the parameters before "
            f"that step are kept in the exception's .sampler (try a lower learning_rate)"
        )
        self.step = step
        self.loss = loss
        self.sampler = sampler


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _as_matrix(name: str, codes):
    """``codes`` as an array (NumPy for lists) of rank 2, else a ``ValueError``."""
    if not hasattr(codes, "shape") or not hasattr(codes, "dtype"):
        codes = np.asarray(codes)
    if codes.ndim != 2:
        raise ValueError(f"{name} must have rank 2 [N, d], got shape {codes.shape}")
    return codes


def _check_codes(name: str, codes, batch_size: int, mesh: Mesh | None):
    """Shape, dtype, finiteness and spread checks; returns the codes on device."""
    codes = _as_matrix(name, codes)
    if not jnp.issubdtype(codes.dtype, jnp.floating):
        raise ValueError(f"{name} must be floating point, got dtype {codes.dtype}")
    n_codes, dim = codes.shape
    if dim < 1:
        raise ValueError(f"{name} must have at least one column, got shape {codes.shape}")
    if mesh is None:
        codes = jnp.asarray(codes)  # one upload; the checks below reduce on device
        per_device = n_codes
    else:
        codes = _shard_codes(codes, mesh)  # no gather: only scalar / [d] reductions below
        per_device = n_codes // mesh.size
    if per_device < batch_size:
        where = "" if mesh is None else f" per device ({n_codes} codes over {mesh.size} devices)"
        raise ValueError(
            f"batch_size ({batch_size}) exceeds the number of {name}{where} ({per_device}); "
            "pass a smaller batch_size"
        )
    finite, spread = _finite_and_spread(codes)
    if not bool(finite):
        raise ValueError(f"{name} contain NaN or inf")
    return codes, float(spread)


def fit(
    rng: jax.Array,
    codes: jax.Array,
    *,
    prior: Any = None,
    method: str = "auto",
    steps: int = 1000,
    batch_size: int | None = None,
    potential: nnx.Module | dict | None = None,
    optimizer: optax.GradientTransformation | None = None,
    learning_rate: float = 1e-3,
    lam: float = 1.0,
    penalty: str | None = None,
    lp: Callable | None = None,
    ema_decay: float | None = None,
    validation_codes: jax.Array | None = None,
    callback: Callable[[int, dict], Any] | None = None,
    log_every: int = 100,
    checkpoint_path: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume_from: str | os.PathLike | None = None,
    mesh: Mesh | None = None,
    bounds: tuple | None = None,
) -> Sampler:
    """Fits an AE-OT sampler, a map T from the prior's noise to the codes, on latent codes.

    The method (:func:`resolve_method` says which ``"auto"`` picks) decides the map's form:
    ``"minibatch"`` and ``"debiased"`` train a potential D and sample ``z + ∇D(z)``;
    ``"pursuit"`` maps the codes' non-Gaussian block by a debiased potential and the rest by
    exact linear and monotone layers (``docs/pursuit.md``). With ``bounds`` every method fits
    the codes' logits and maps back into the box.

    Args:
      rng: PRNG key; it fixes the initialisation, the noise and the code batches.
      codes: latent codes of the dataset ``[N, d]``, finite, not all equal, ``N >= batch_size``.
      prior: noise prior (default ``Gaussian()``); its ``dim``, when set, must equal d.
      method: ``"debiased"``, ``"minibatch"`` (Liu et al.'s Algorithm 1; see
        :mod:`latentot.aeot.targets`), ``"pursuit"`` (:mod:`latentot.aeot.pursuit`; needs
        the standard Gaussian prior) or ``"auto"`` (default): ``"minibatch"`` for
        d ≤ :data:`AUTO_MINIBATCH_MAX_DIM`, ``"pursuit"`` from d =
        :data:`AUTO_PURSUIT_MIN_DIM` under the standard Gaussian prior (with or without a
        mesh), else ``"debiased"`` (:func:`resolve_method`).
      steps: total number of training steps (including those of a resumed run).
      batch_size: LP size m (noise and code points per step, per device with a mesh);
        ``None`` for the method's default (:data:`METHOD_DEFAULTS`: 512 for ``"debiased"``,
        1024 for ``"minibatch"``), capped at the number of codes (per device).
      potential: ``None`` for the method's default :class:`Potential` (a max of heads,
        scaled to the codes' spread; for ``"debiased"`` 16 heads with per-head curvature on a
        Bures base fitted to the codes and the prior (per-head curvature up to d =
        :data:`DEBIASED_CURVATURE_MAX_DIM`), and a learnable shared quadratic up to
        d = :data:`DEBIASED_QUADRATIC_MAX_DIM`; for ``"minibatch"`` 32 heads with a learnable
        shared quadratic: :func:`default_potential`); a dict of
        :class:`Potential` keyword arguments overriding those defaults; or an NNX module
        ``D: [m, d] → [m]`` (a :class:`Potential` or any other), trained as given, starting
        from its current variables, and returned in the sampler.
      optimizer: any ``optax.GradientTransformation``; default
        :func:`~latentot.aeot.trainer.default_optimizer` ``(learning_rate, steps)``, Adam with a
        cosine decay (for ``"debiased"`` over at most :data:`DEBIASED_SCHEDULE_STEPS` steps,
        then constant at its final rate).
      learning_rate: initial learning rate of the default optimizer (ignored with
        ``optimizer``).
      lam: weight λ of the gradient penalty against the value term (``"minibatch"`` only; the
        debiased loss is the penalty alone).
      penalty: ``"vector"``, ``"vector_l1"`` or ``"norm"`` (see :mod:`latentot.aeot.losses`);
        default ``"vector"`` for ``"debiased"`` and ``"vector_l1"`` for ``"minibatch"``.
      lp: the batch LP solver with its settings, ``lp(x, y)`` (default
        :class:`~latentot.aeot.BatchLPSolver` ``()``); it must be jittable and hashable and
        return ``assignment`` (and ``phi`` for ``"minibatch"``); ``cost``, ``dual_gap``,
        ``max_violation`` and ``converged`` go to the history when present.
      ema_decay: decay per step of the moving average of the parameters that the returned
        sampler uses (bias-corrected; ``0`` returns the last iterate); ``None`` for the
        method's default (:data:`METHOD_DEFAULTS`: 0.998 for ``"debiased"``, 0 for
        ``"minibatch"``). Checkpoints carry the average, so a resumed run stays exact.
      validation_codes: held-out codes ``[M, d]``; once per chunk the history records
        ``val_step``, ``val_cost`` (the batch-LP transport cost between pushed noise and held-out
        codes) and ``val_divergence`` (that cost debiased: minus half the costs pushed-vs-pushed
        and held-out-vs-held-out, about 0 when T#P equals the codes' law). Needs
        ``M >= 2 · batch_size``, or a smaller batch is used.
      callback: ``callback(step, metrics)``, called on the host once per chunk with the number
        of steps done and a dict of floats: the last step's ``loss``, ``map_error``,
        ``grad_norm``, LP diagnostics, and the ``val_…`` metrics when computed. Pass
        ``FitProgress(steps)`` (:class:`latentot.aeot.FitProgress`) for a progress bar with the
        loss and the ETA.
      log_every: steps per jitted chunk (the host syncs once a chunk).
      checkpoint_path: where to write training checkpoints (atomically).
      checkpoint_every: steps between checkpoints (default ``log_every``); the last step is
        always checkpointed when ``checkpoint_path`` is set.
      resume_from: a training checkpoint of a run with the same settings and prior; training
        continues from its step with its variables, optimiser state and PRNG key, and gives the
        same result as the uninterrupted run (with the same ``mesh`` size).
      mesh: a :class:`jax.sharding.Mesh` for data-parallel training (see
        ``docs/distributed.md``): each device draws ``batch_size`` noise points and codes from
        its own row shard of the codes and solves its own LPs; gradients are averaged over
        devices; parameters and optimiser state stay replicated. N must be divisible by the
        number of devices; an array already sharded by rows is used in place. With a mesh
        across processes, pass the same host array on every process or a global
        ``jax.Array`` sharded by rows (``docs/distributed.md``).
      bounds: ``(low, high)``, scalars or ``[d]`` arrays with ``low < high``: a box that holds
        every code (pixels in [0, 1], a tanh bottleneck in [-1, 1]). The sampler is then fitted
        to ``logit((y − low) / (high − low))`` (codes within ``1e-6 · (high − low)`` of a face
        are moved that far inside) and maps back with the logistic function, so every sample
        lies inside the box; ``sampler.bounds`` holds it. Codes outside the box raise.

    Returns:
      The trained :class:`~latentot.aeot.Sampler`; ``sampler.history`` is a dict of NumPy arrays
      over steps: ``step``, ``loss``, ``value_loss``, ``penalty_loss``, ``map_error``,
      ``grad_norm``, the LP's ``lp_cost``, ``lp_dual_gap``, ``lp_max_violation``,
      ``lp_converged`` (and ``lp_self_cost`` and ``monotone_moved`` for ``"debiased"``), the
      ``val_…`` arrays, and for ``"pursuit"`` the frame's ``k``, ``gap`` and ``layers`` (one
      entry each) with the block's training history when k ≥ 2; for every method
      ``transport_gap`` and ``transport_gap_reassigned`` (one entry each), the fitted map's
      :func:`~latentot.aeot.transport_gap` on :data:`CERTIFICATE_POINTS` prior draws: 0 for an
      optimal map (``docs/transport_gap.md``; not with a mesh across processes, where the
      caller computes it on its own process's copy).

    Raises:
      ValueError: invalid arguments or codes (before any training), or a checkpoint that does
        not match (other settings, potential or prior).
      TrainingDivergedError: a non-finite loss; it carries the last good sampler.
    """
    training = _Training.validated(
        steps=steps,
        batch_size=batch_size,
        potential=potential,
        optimizer=optimizer,
        learning_rate=learning_rate,
        lam=lam,
        penalty=penalty,
        lp=lp,
        ema_decay=ema_decay,
        callback=callback,
        log_every=log_every,
        checkpoint_path=checkpoint_path,
        checkpoint_every=checkpoint_every,
        resume_from=resume_from,
    )
    if prior is not None and not callable(getattr(prior, "sample", None)):
        raise ValueError(f"prior must have a sample(rng, shape, dtype) method, got {prior!r}")
    codes = _as_matrix("codes", codes)
    dim = codes.shape[1]
    method = resolve_method(method, dim, prior=prior, mesh=mesh)
    if method == "pursuit" and not _is_standard_gaussian(prior):
        raise ValueError(f'method="pursuit" needs the prior Gaussian(0, 1), got {prior!r}')
    mesh = _auto_axes(mesh)
    prior = _priors.Gaussian() if prior is None else prior

    # The box: the sampler of the codes' logits, mapped back by the logistic function.
    box = None if bounds is None else _box(bounds, dim)
    if box is not None:
        codes = _to_logits("codes", codes, box)
        if validation_codes is not None:
            validation_codes = _to_logits(
                "validation_codes", _as_matrix("validation_codes", validation_codes), box
            )

    if method == "pursuit":
        sampler = _fit_pursuit(rng, codes, validation_codes, mesh, training)
    else:
        sampler = _fit_potential(rng, codes, method, prior, validation_codes, mesh, training)
    if box is not None:
        sampler = _with(sampler, bounds=tuple(jnp.asarray(b, codes.dtype) for b in box))
    if not _one_process(mesh):  # the certificate is computed on one host's copy of the map
        return sampler
    return _certified(sampler, jax.random.fold_in(rng, CERTIFICATE_KEY))


#: ``fit`` records the fitted map's cyclical-monotonicity gap
#: (:func:`~latentot.aeot.transport_gap`) on this many prior draws, without the Monge gap
#: (a fraction of a second); call ``transport_gap`` with more points for a finer certificate.
CERTIFICATE_POINTS = 512

#: The fit key is folded with this to draw them.
CERTIFICATE_KEY = 2**31 - 3


def _certified(sampler: Sampler, rng) -> Sampler:
    """``sampler`` with ``history["transport_gap"]`` and ``["transport_gap_reassigned"]``."""
    gap = transport_gap(sampler, rng, n=CERTIFICATE_POINTS, monge=False)
    history = dict(sampler.history or {})
    history["transport_gap"] = np.asarray([gap.gap])
    history["transport_gap_reassigned"] = np.asarray([gap.reassigned])
    sampler.history = history
    return sampler


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Training:
    """The trainer loop's settings as ``fit`` got them, validated (method-independent)."""

    steps: int
    batch_size: int | None
    potential: Any
    optimizer: optax.GradientTransformation | None
    learning_rate: float
    lam: float
    penalty: str | None
    lp: Callable
    ema_decay: float | None
    callback: Callable | None
    log_every: int
    checkpoint_path: Any
    checkpoint_every: int | None
    resume_from: Any

    @classmethod
    def validated(cls, **kwargs) -> _Training:
        for name in ("steps", "log_every"):
            _check_positive_int(name, kwargs[name])
        for name in ("batch_size", "checkpoint_every"):
            if kwargs[name] is not None:
                _check_positive_int(name, kwargs[name])
        for name, zero_ok in (("learning_rate", False), ("lam", True)):
            value = kwargs[name]
            ok = isinstance(value, (int, float, np.floating)) and math.isfinite(value)
            if not ok or value < 0 or (value == 0 and not zero_ok):
                bound = ">= 0" if zero_ok else "> 0"
                raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
        penalty = kwargs["penalty"]
        if penalty is not None and penalty not in PENALTIES:
            raise ValueError(f"penalty must be one of {PENALTIES}, got {penalty!r}")
        if kwargs["ema_decay"] is not None:
            check_ema_decay(kwargs["ema_decay"])
        optimizer = kwargs["optimizer"]
        if optimizer is not None and not isinstance(optimizer, optax.GradientTransformation):
            raise ValueError(
                f"optimizer must be an optax.GradientTransformation, got {optimizer!r}"
            )
        callback = kwargs["callback"]
        if callback is not None and not callable(callback):
            raise ValueError(f"callback must be callable, got {callback!r}")
        lp = BatchLPSolver() if kwargs["lp"] is None else kwargs["lp"]
        if not callable(lp):
            raise ValueError(f"lp must be callable as lp(x, y), got {lp!r}")
        potential = kwargs["potential"]
        if potential is not None and not isinstance(potential, (dict, nnx.Module)):
            raise ValueError(f"potential must be an nnx.Module, a dict or None, got {potential!r}")
        return cls(**(kwargs | {"lp": lp}))


def _fit_potential(rng, codes, method, prior, validation_codes, mesh, training) -> Sampler:
    """``"debiased"`` or ``"minibatch"``: trains a potential D on ``codes`` ``[N, d]``
    (the trainer loop in jitted chunks), then the debiased sampler's moment correction."""
    t = training
    batch_size = t.batch_size
    if batch_size is None:
        per_device = codes.shape[0] // (1 if mesh is None else mesh.size)
        batch_size = max(1, min(METHOD_DEFAULTS[method]["batch_size"], per_device))
    penalty = DEFAULT_PENALTY[method] if t.penalty is None else t.penalty
    ema_decay = check_ema_decay(
        METHOD_DEFAULTS[method]["ema_decay"] if t.ema_decay is None else t.ema_decay
    )
    codes, spread = _check_codes("codes", codes, batch_size, mesh)
    if spread == 0:
        raise ValueError(_ZERO_SPREAD)
    dim = codes.shape[1]
    pdim = getattr(prior, "dim", None)
    if pdim is not None and pdim != dim:
        raise ValueError(f"prior has dimension {pdim} but the codes have dimension {dim}")
    if validation_codes is not None:
        if mesh is not None:
            raise ValueError("validation_codes are not supported with mesh=")
        validation_codes, _ = _check_codes("validation_codes", validation_codes, 2, None)
        if validation_codes.shape[1] != dim:
            raise ValueError(
                f"validation_codes have dimension {validation_codes.shape[1]}, the codes {dim}"
            )

    k_init, k_train = jax.random.split(rng)
    k_moment = jax.random.fold_in(rng, MOMENT_KEY)
    module = _build_potential(t.potential, codes, prior, spread, k_init, method)
    if getattr(module, "dim", dim) != dim:
        raise ValueError(f"potential has dimension {module.dim}, the codes {dim}")
    settings = {
        "method": method,
        "steps": int(t.steps),
        "batch_size": int(batch_size),
        "lam": float(t.lam),
        "penalty": penalty,
        "ema_decay": ema_decay,
        "lp": repr(t.lp),
        "optimizer": (
            "custom" if t.optimizer is not None else f"default({float(t.learning_rate)!r})"
        ),
    }
    optimizer = t.optimizer
    if optimizer is None:
        horizon = DEBIASED_SCHEDULE_STEPS if method == "debiased" else None
        optimizer = default_optimizer(float(t.learning_rate), int(t.steps), horizon=horizon)
    axes = None if mesh is None or mesh.size == 1 else tuple(mesh.axis_names)
    trainer = Trainer(
        graphdef=nnx.graphdef(module),
        optimizer=optimizer,
        lp=t.lp,
        method=method,
        batch_size=int(batch_size),
        lam=float(t.lam),
        penalty=penalty,
        scale=float(f"{spread:.6g}"),  # (rounded: one device and a mesh agree)
        axes=axes,
        ema_decay=ema_decay,
    )
    state = trainer.init(k_train, module, prior)
    config = getattr(module, "config", None)
    history: dict[str, np.ndarray] = {}
    if t.resume_from is not None:
        state, history = _load_training(t.resume_from, settings, config, state)
    if mesh is not None:  # replicated over the mesh, built host-side (works across processes)
        state = _replicate(state, mesh)
    checkpoint = (t.checkpoint_path, settings, config)
    state, history = _train_loop(
        trainer, state, history, codes, validation_codes, mesh, t, checkpoint, k_train
    )
    sampler = trainer.sampler(state, history=history, dim=dim)
    if method == "debiased" and mesh is None:
        sampler = _moment_corrected(sampler, codes, k_moment)
    return sampler


def _train_loop(trainer, state, history, codes, validation_codes, mesh, t, checkpoint, key):
    """Runs the trainer from ``state.step`` to ``t.steps`` in jitted chunks; once a chunk:
    the divergence check, the held-out metrics, the callback and the checkpoint. Returns
    ``(state, history)`` with ``history`` a dict of arrays over steps."""
    path, settings, config = checkpoint
    steps, log_every = t.steps, t.log_every
    checkpoint_every = log_every if t.checkpoint_every is None else t.checkpoint_every
    chunk = min(log_every, checkpoint_every if path else log_every, steps)
    hist_lists: dict[str, list] = {k: [np.asarray(v)] for k, v in history.items()}

    def joined():
        return {k: np.concatenate(v) for k, v in hist_lists.items()}

    val_key = jax.random.fold_in(key, 2**31 - 1)
    step = int(state.step)
    while step < steps:
        stop = min((step // chunk + 1) * chunk, steps)
        if path:
            stop = min(stop, (step // checkpoint_every + 1) * checkpoint_every)
        n = stop - step
        new_state, bad, stats = _run_chunk(trainer, chunk, mesh, state, codes, np.int32(n))
        stats = jax.device_get(stats)  # [chunk] per-step scalars, replicated
        bad = int(bad)
        keep = n if bad < 0 else bad - step
        bad_loss = float(stats["loss"][keep]) if bad >= 0 else None
        stats = {k: v[:keep] for k, v in stats.items() if k != "finite"}
        stats["step"] = np.arange(step, step + keep)
        for k, v in stats.items():
            hist_lists.setdefault(k, []).append(v)
        state = new_state
        if bad >= 0:
            sampler = trainer.sampler(state, history=joined(), dim=codes.shape[1])
            raise TrainingDivergedError(bad, bad_loss, sampler)
        step = stop
        metrics = {k: float(v[-1]) for k, v in stats.items() if k != "step"}
        if validation_codes is not None:
            val = jax.device_get(
                _validate(trainer, state, validation_codes, jax.random.fold_in(val_key, step))
            )
            hist_lists.setdefault("val_step", []).append(np.asarray([step]))
            for k, v in val.items():
                hist_lists.setdefault(k, []).append(np.asarray([v]))
                metrics[k] = float(v)
        if t.callback is not None:
            t.callback(step, metrics)
        due = path and (step % checkpoint_every == 0 or step == steps)
        if due and jax.process_index() == 0:
            _save_training(path, settings, config, state, joined())
    return state, joined()


#: Prior draws that measure the learned map's pushed moments (:func:`_moment_corrected`).
MOMENT_DRAWS = 65_536

#: The fit key is folded with this to draw them.
MOMENT_KEY = 2**31 - 2


def _moment_corrected(sampler: Sampler, codes, rng) -> Sampler:
    """The debiased sampler followed by its moment correction
    (:func:`~latentot.aeot.pursuit.moment_correction`), as a frame with k = d; the sampler
    itself when its pushed moments already match the codes'."""
    codes_np = codes if _pursuit._is_global(codes) else np.asarray(codes)
    dim = codes_np.shape[1]
    mean, cov = _pursuit.moments(codes_np)
    z = sampler.prior.sample(rng, (MOMENT_DRAWS, dim), codes_np.dtype)
    block = _pursuit.moment_correction(sampler.transport(z), mean, cov)
    if block is None:
        return sampler
    frame = _pursuit.Frame(
        mean=jnp.zeros((dim,), jnp.float32),
        basis=jnp.eye(dim, dtype=jnp.float32),
        scale=jnp.zeros((0,), jnp.float32),
        layers=(),
        k=dim,
        block=block,
    )
    return _with(sampler, frame=frame)


def _with(sampler: Sampler, **changes) -> Sampler:
    """The sampler with its ``frame`` and/or ``bounds`` replaced."""
    kept = {"frame": sampler.frame, "bounds": sampler.bounds}
    return Sampler(
        sampler.params,
        sampler.prior,
        sampler.potential_config,
        sampler.history,
        graphdef=sampler.graphdef,
        dim=sampler._dim,
        **(kept | changes),
    )


#: Codes closer than this fraction of the box's width to one of its faces are moved that far
#: inside before the logit (``fit(bounds=...)``).
BOX_MARGIN = 1e-6


def _box(bounds, dim) -> tuple[np.ndarray, np.ndarray]:
    """``bounds=(low, high)`` as two float64 ``[d]`` arrays, validated."""
    try:
        low, high = (np.broadcast_to(np.asarray(b, np.float64), (dim,)) for b in bounds)
    except (TypeError, ValueError):
        raise ValueError(
            f"bounds must be (low, high), scalars or [{dim}] arrays, got {bounds!r}"
        ) from None
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high)) and np.all(low < high)):
        raise ValueError("bounds: low and high must be finite with low < high")
    return low, high


def _to_logits(name, y, box) -> np.ndarray:
    """``logit((y − low) / (high − low))`` of codes ``[N, d]`` inside the box (in their dtype);
    codes within :data:`BOX_MARGIN` of a face are moved that far inside."""
    low, high = box
    dtype = y.dtype  # (non-floating codes are refused by the fit's own checks)
    y = np.asarray(y, np.float64)
    if np.any(y < low) or np.any(y > high):
        raise ValueError(f"{name} lie outside bounds=(low, high)")
    u = np.clip((y - low) / (high - low), BOX_MARGIN, 1.0 - BOX_MARGIN)
    return (np.log(u) - np.log1p(-u)).astype(dtype)


def _fit_pursuit(rng, codes, validation_codes, mesh, training: _Training) -> Sampler:
    """``method="pursuit"``: the frame of :func:`~latentot.aeot.pursuit.find_frame` (from
    every code), and the ``"debiased"`` method on its k-dimensional block (when k ≥ 2),
    data-parallel over ``mesh`` when one is given (the block's training rows are then cut to a
    multiple of the device count; the frame is the same as without a mesh up to rounding).

    Across processes the codes are either the same host array on every process (each process
    reads the rows of its own devices from it) or a global ``jax.Array`` sharded by rows: its
    moments are float64 sums of each process's rows added across processes, the held-out rows
    are gathered to every process and the fitting and block rows are gathered on the devices,
    sharded by rows over the mesh. Every process then builds the same frame."""
    spread_out = _pursuit._is_global(codes)  # this process holds only its devices' rows
    if spread_out and mesh is None:
        raise ValueError("codes: a global array across processes needs mesh=")
    codes_np = _shard_codes(codes, mesh) if spread_out else np.asarray(codes)
    if not np.issubdtype(codes_np.dtype, np.floating):
        raise ValueError(f"codes must be floating point, got dtype {codes_np.dtype}")
    n, dim = codes_np.shape
    if dim < 1:
        raise ValueError(f"codes must have at least one column, got shape {codes_np.shape}")
    if n < (training.batch_size or 1):
        raise ValueError(
            f"batch_size ({training.batch_size}) exceeds the number of codes ({n}); "
            "pass a smaller batch_size"
        )
    # The checks of the other methods, from the frame's float64 moments (one pass over the
    # codes in chunks, no copy of them): a NaN or inf in the codes makes the sums non-finite.
    moments = _pursuit.moments(codes_np)
    if not (np.all(np.isfinite(moments[0])) and np.all(np.isfinite(moments[1]))):
        raise ValueError("codes contain NaN or inf")
    if np.sqrt(np.mean(np.diag(moments[1]))) == 0:
        raise ValueError(_ZERO_SPREAD)
    k_split, k_fit = jax.random.split(rng)
    if validation_codes is None:
        n_val = _pursuit.held_out_size(n)
        order = np.asarray(jax.random.permutation(k_split, n))
        val_idx, fit_idx = np.sort(order[:n_val]), np.sort(order[n_val:])
        held_out = _held_out_rows(codes_np, val_idx, mesh) if spread_out else codes_np[val_idx]
    else:
        held_out, _ = _check_codes("validation_codes", validation_codes, 1, None)
        held_out = np.asarray(held_out)
        if held_out.shape[1] != dim:
            raise ValueError(
                f"validation_codes have dimension {held_out.shape[1]}, the codes {dim}"
            )
        fit_idx = None
    frame, report = _pursuit.find_frame(
        codes_np,
        held_out,
        fit_rows=fit_idx,
        seed=int(jax.random.randint(k_fit, (), 0, 2**30)),
        mesh=mesh,
        code_moments=moments,
    )
    history = {
        "k": np.asarray([frame.k]),
        "gap": np.asarray([report.gap]),
        "layers": np.asarray([len(frame.layers)]),
    }
    if frame.k == 0:
        return Sampler(None, _priors.Gaussian(), None, history, frame=frame)
    basis = np.asarray(frame.basis[:, : frame.k], np.float64)
    mean = np.asarray(frame.mean, np.float64)
    rows = np.arange(n) if fit_idx is None else fit_idx
    devices = 1 if mesh is None else mesh.size
    rows = rows[: len(rows) - len(rows) % devices]
    if spread_out:  # the block's rows sharded over the mesh, each process projects its own
        block = _pursuit._gather_projected(codes_np, rows, mean, basis, mesh, codes_np.dtype)
    else:
        block = _pursuit.project(codes_np, mean, basis, rows=rows).astype(codes_np.dtype)
    inner_val = _pursuit.project(held_out, mean, basis).astype(codes_np.dtype)
    if len(inner_val) < 4 or mesh is not None:
        inner_val = None
    changes = {}
    if training.batch_size is not None:  # valid for the N codes; the block has fewer
        changes["batch_size"] = min(training.batch_size, len(block) // devices)
    if training.potential is None and frame.k <= PURSUIT_BLOCK_CURVATURE_MAX_DIM:
        changes["potential"] = {"curvature": True}
    inner = _fit_potential(
        k_fit,
        block,
        "debiased",
        _priors.Gaussian(),
        inner_val,
        mesh,
        dataclasses.replace(training, **changes),
    )
    if mesh is not None:  # the moment correction that the fit without a mesh makes
        inner = _moment_corrected(inner, block, jax.random.fold_in(k_fit, MOMENT_KEY))
    history = (inner.history or {}) | history
    if inner.frame is not None:  # the inner fit's moment correction, in the block's coordinates
        frame = dataclasses.replace(frame, block=inner.frame.block)
    return Sampler(inner.params, inner.prior, inner.potential_config, history, frame=frame)


_ZERO_SPREAD = (
    "codes are all equal (zero spread): there is no map to learn; a constant sampler "
    "is lambda rng, n: jnp.broadcast_to(codes[0], (n, d))"
)


def _build_potential(potential, codes, prior, spread, key, method) -> nnx.Module:
    """The module to train: a user module as given, or the default :class:`Potential`."""
    dim = codes.shape[1]
    if isinstance(potential, nnx.Module):
        return potential
    kwargs = default_potential(method, dim) | {"param_dtype": codes.dtype} | dict(potential or {})
    kwargs.setdefault("output_scale", spread)
    try:
        module = Potential(dim, **({"rngs": nnx.Rngs(key)} | kwargs))
    except TypeError as e:
        raise ValueError(f"potential: {e}") from None
    if module.base:
        module.set_base(*bures_map(codes, prior))
    return module


# --------------------------------------------------------------------------------------------
# The jitted chunk of steps.


@functools.partial(jax.jit, static_argnames=("trainer", "chunk", "mesh"), donate_argnums=(3,))
def _run_chunk(trainer: Trainer, chunk: int, mesh: Mesh | None, state: TrainState, codes, n):
    """Runs ``n <= chunk`` steps (``n`` traced: one compilation serves every chunk).

    From the first step with a non-finite loss or gradient on (``bad``, else -1) updates are
    skipped, so the returned state is the last good one. Returns ``(state, bad, stats)`` with
    ``stats`` ``[chunk]`` arrays of per-step metrics.

    With a mesh the chunk runs inside :func:`jax.shard_map`: codes are split by rows, the rest
    is replicated. The body runs with ``check_vma=False`` because ott's Sinkhorn is not written
    for varying-axis tracking; the gradient taken inside is then each device's own, and the
    trainer averages it with one ``pmean``.
    """
    body = functools.partial(_chunk_body, trainer, chunk)
    if mesh is None:
        return body(state, codes, n)
    rep = P()
    return jax.shard_map(
        body,
        mesh=mesh,
        in_specs=(rep, P(tuple(mesh.axis_names)), rep),
        out_specs=rep,
        check_vma=False,
    )(state, codes, n)


def _chunk_body(trainer: Trainer, chunk: int, state: TrainState, codes, n):
    def one(i, carry):
        state, bad, bufs = carry
        new, stats = trainer.step(state, codes)
        ok = stats["finite"] & (bad < 0)
        state = jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), new, state)
        bad = jnp.where((bad < 0) & ~stats["finite"], new.step - 1, bad)
        bufs = {k: bufs[k].at[i].set(v.astype(bufs[k].dtype)) for k, v in stats.items()}
        return state, bad, bufs

    shapes = jax.eval_shape(trainer.step, state, codes)[1]
    bufs = {k: jnp.zeros((chunk, *s.shape), s.dtype) for k, s in shapes.items()}
    state, bad, bufs = jax.lax.fori_loop(0, n, one, (state, jnp.int32(-1), bufs))
    return state, bad, bufs


@functools.partial(jax.jit, static_argnames=("trainer",))
def _validate(trainer: Trainer, state: TrainState, held_out, key):
    """Held-out metrics: LP costs between pushed noise and two held-out batches."""
    m = min(trainer.batch_size, held_out.shape[0] // 2)
    d = held_out.shape[1]
    k1, k2, k3 = jax.random.split(key, 3)
    model = trainer.model(state, averaged=True)
    u = _transport(model, state.prior.sample(k1, (m, d), held_out.dtype).astype(held_out.dtype))
    u2 = _transport(model, state.prior.sample(k2, (m, d), held_out.dtype).astype(held_out.dtype))
    perm = jax.random.permutation(k3, held_out.shape[0])[: 2 * m]
    y, y2 = held_out[perm[:m]], held_out[perm[m:]]
    cost = trainer.lp(u, y).cost
    divergence = cost - 0.5 * trainer.lp(u, u2).cost - 0.5 * trainer.lp(y, y2).cost
    return {"val_cost": cost, "val_divergence": divergence}


@jax.jit
def _finite_and_spread(codes):
    """(all finite, √(mean over coordinates of the codes' variance)), on device."""
    return jnp.all(jnp.isfinite(codes)), jnp.sqrt(jnp.mean(jnp.var(codes, axis=0)))


# --------------------------------------------------------------------------------------------
# Placement on a mesh (multi-process safe: arrays are assembled from host data per device).


def _auto_axes(mesh: Mesh | None) -> Mesh | None:
    """``mesh`` with every axis of type Auto (the same devices and axis names).

    ``jax.make_mesh`` gives Explicit axes by default, under which the codes' covariance (a
    contraction over the sharded rows) and ott-jax's solvers have no defined output sharding;
    the training only needs the data axis, so ``fit`` uses the Auto-typed copy.
    """
    if mesh is None:
        return None
    types = getattr(mesh, "axis_types", None)
    if types is not None and all(t == AxisType.Auto for t in types):
        return mesh
    return Mesh(mesh.devices, mesh.axis_names, axis_types=(AxisType.Auto,) * mesh.devices.ndim)


def _held_out_rows(codes: jax.Array, rows: np.ndarray, mesh: Mesh) -> np.ndarray:
    """``codes[rows]`` of a global array, on every process (NumPy, the codes' dtype)."""
    return np.asarray(_pursuit._take(codes, np.asarray(rows, np.int32), NamedSharding(mesh, P())))


def _shard_codes(codes, mesh: Mesh) -> jax.Array:
    """``codes`` [N, d] sharded by rows over all axes of ``mesh``.

    A ``jax.Array`` is resharded on device (kept as is when already sharded that way); host
    data is placed shard by shard, so each process only uploads the rows of its own devices.
    """
    sharding = NamedSharding(mesh, P(tuple(mesh.axis_names)))
    n = codes.shape[0]
    if n % mesh.size:
        raise ValueError(
            f"codes: {n} rows cannot be split evenly over the mesh's {mesh.size} devices; "
            "drop or add rows so that N is a multiple of the device count"
        )
    if isinstance(codes, jax.Array):
        if codes.sharding == sharding:
            return codes
        return jax.device_put(codes, sharding)
    host = np.asarray(codes)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def _replicate(tree, mesh: Mesh):
    """Every leaf of ``tree`` (arrays or PRNG keys) replicated over ``mesh``."""
    sharding = NamedSharding(mesh, P())

    def put(leaf):
        if not hasattr(leaf, "dtype"):  # Python numbers (e.g. a prior's loc) stay as they are
            return leaf
        if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            data = put(jax.random.key_data(leaf))
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(leaf))
        host = np.asarray(leaf)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree_util.tree_map(put, tree)


# --------------------------------------------------------------------------------------------
# Training checkpoints.


def _key_to_meta(key) -> tuple[dict, np.ndarray]:
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return {"typed": True, "impl": str(jax.random.key_impl(key))}, np.asarray(
            jax.random.key_data(key)
        )
    return {"typed": False}, np.asarray(key)


def _key_from_meta(meta: dict, data: np.ndarray):
    if meta.get("typed"):
        return jax.random.wrap_key_data(jnp.asarray(data), impl=meta["impl"])
    return jnp.asarray(data)


def _prior_record(prior) -> tuple[dict, dict[str, np.ndarray]]:
    """The prior as the checkpoint stores it, plus a signature for the resume check: its type,
    tree structure and leaf values (Python numbers and arrays compare by value)."""
    meta, arrays = _ckpt.prior_to_meta(prior)
    leaves, treedef = jax.tree_util.tree_flatten(prior)
    signature = {
        "type": f"{type(prior).__module__}.{type(prior).__qualname__}",
        "tree": str(treedef),
        "leaves": [np.asarray(leaf).astype(np.float32).tolist() for leaf in leaves],
    }
    return {"prior": meta, "prior_signature": signature}, arrays


def _save_training(path, settings, config, state: TrainState, history):
    prior_meta, prior_arrays = _prior_record(state.prior)
    key_meta, key_data = _key_to_meta(state.key)
    meta = {
        "potential": config,
        **prior_meta,
        "train": settings,
        "step": int(state.step),
        "key": key_meta,
    }
    variables = nnx.merge_state(state.params, state.rest)
    arrays = (
        _ckpt.tree_to_arrays("params", variables)
        | _ckpt.tree_to_arrays("opt", state.opt_state)
        | ({} if state.average is None else _ckpt.tree_to_arrays("average", state.average))
        | prior_arrays
        | {"key": key_data}
        | {f"history/{k}": v for k, v in history.items()}
    )
    _ckpt.write_file(path, "training", meta, arrays)


def _load_training(path, settings: dict, config: dict | None, state: TrainState):
    kind, meta, arrays = _ckpt.read_file(path)
    if kind != "training":
        raise ValueError(f"resume_from: {path!s} is a {kind!r} checkpoint, not a training one")
    stored = meta["train"]
    diff = [k for k in settings if stored.get(k) != settings[k]]
    if diff:
        details = ", ".join(f"{k}: {stored.get(k)!r} vs {settings[k]!r}" for k in diff)
        raise ValueError(f"resume_from: settings differ from the checkpoint ({details})")
    prior_meta, _ = _prior_record(state.prior)
    stored_sig, sig = meta.get("prior_signature"), prior_meta["prior_signature"]
    if stored_sig != sig:
        raise ValueError(
            f"resume_from: the prior differs from the checkpoint's ({stored_sig} vs {sig})"
        )
    stored_config = meta.get("potential")
    if (stored_config is None) != (config is None) or (
        config is not None and not _same_potential(stored_config, config)
    ):
        raise ValueError(
            f"resume_from: the potential differs from the checkpoint "
            f"({stored_config!r} vs {config!r})"
        )
    template = nnx.merge_state(state.params, state.rest)
    variables = _ckpt.arrays_to_tree("params", template, arrays, path)
    params, rest = nnx.split_state(variables, nnx.Param, ...)
    opt_state = _ckpt.arrays_to_tree("opt", state.opt_state, arrays, path)
    average = state.average
    if average is not None:
        average = _ckpt.arrays_to_tree("average", average, arrays, path)
    key = _key_from_meta(meta["key"], arrays["key"])
    step = jnp.asarray(int(meta["step"]), jnp.int32)
    new = dataclasses.replace(
        state, params=params, rest=rest, opt_state=opt_state, average=average, key=key
    )
    return dataclasses.replace(new, step=step), _ckpt.history_from_arrays(arrays)


def _same_potential(stored: dict, wanted: dict) -> bool:
    """Equal potential configurations, floats up to a relative 1e-5 (the codes' spread is
    computed on device, where a mesh may change the last bits)."""
    if stored.keys() != wanted.keys():
        return False
    for k, a in stored.items():
        b = wanted[k]
        if isinstance(a, float) and isinstance(b, float):
            if not math.isclose(a, b, rel_tol=1e-5):
                return False
        elif a != b:
            return False
    return True
