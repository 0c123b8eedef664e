"""How close a map is to an optimal one: its cyclical-monotonicity gap and ott-jax's Monge gap.

The optimal map T* for the squared Euclidean cost (the Brenier map, the gradient of a convex
function) has a cyclically monotone graph: for any points x₁ … x_n and any permutation σ,

    Σᵢ ⟨xᵢ, T*(xᵢ)⟩ ≥ Σᵢ ⟨xᵢ, T*(x_σ(i))⟩,

so on its own samples the identity is an optimal assignment between ``x`` and ``T*(x)``. A map
that is not optimal is beaten by some rearrangement of its own images, and how much it is beaten
is a certificate of its distance from optimality that needs neither the target law nor the
optimal map. With centred points x̃ᵢ = xᵢ − x̄, ỹᵢ = T(xᵢ) − ȳ and S(σ) = Σᵢ ⟨x̃ᵢ, ỹ_σ(i)⟩,

    gap = (max_σ S(σ) − S(id)) / max_σ S(σ)  =  1 − S(id) / max_σ S(σ).

Centring changes every S(σ) by the same constant, n ⟨x̄, ȳ⟩, so the optimal σ and the numerator
are those of the uncentred sums, and the gap is invariant to translating x or T and to scaling T
by a positive factor. The average of S over all permutations is 0, so max_σ S ≥ 0, with equality
only when x or T(x) is constant (then every assignment is optimal and the gap is 0). The gap is
0 for any optimal map, positive otherwise; a map that reverses the order (T(x) = −x) gives a gap
above 1. The numerator is n/2 times the unregularised Monge gap for the cost ½‖x − y‖²
(Uscidda & Cuturi 2023): the mean cost of the map's own coupling minus the optimal cost between
the two point clouds.

The maximum over σ is an exact assignment problem, solved on the host in float64 by SciPy's
``linear_sum_assignment``. A permutation splits into disjoint cycles, each of which gains on its
own; a cycle of length L whose gain is at most ``rtol`` × L × r_x r_y, with r_x and r_y the
root-mean-square norms of the (uncentred) points and images, the size of the values the map
computed, is a tie at the rounding level of the map (two images equal to the last bits) and is
not counted, neither in the gap nor in the fraction of points reassigned, so neither number
flips with float32 rounding.

The entropic Monge gap is ott-jax's ``monge_gap_from_samples`` (squared Euclidean cost ‖x − y‖²,
ott's ``ent_reg_cost``): M_ε = mean‖xᵢ − T(xᵢ)‖² − W_ε(x, T(x)). ott's entropy term lies between
ε log n and 2 ε log n for couplings of two uniform n-point measures, so for any map

    M₀ + ε log n ≤ M_ε ≤ M₀ + 2 ε log n,        M₀ = (2/n) (max_σ S − S(id)),

and :attr:`TransportGap.monge_gap_relative` = (M_ε − ε log n) / ((2/n) max_σ S) lies between
the gap and the gap + ε log n / ((2/n) max_σ S) (close to the gap when the entropic coupling is
nearly a permutation). ε is ``epsilon`` × (2/n) max_σ S: relative to the scale of the cross
term ⟨x, y⟩ that decides the assignment (the ‖x‖² and ‖y‖² parts of the cost do not).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from latentot import _checks
from latentot._promotion import third_party_promotion

__all__ = ["TransportGap", "transport_gap", "transport_gap_from_samples"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class TransportGap:
    """A map's distance from optimality on ``n`` points (see the module docstring).

    Attributes:
      gap: the cyclical-monotonicity gap 1 − S(id) / max_σ S(σ) (≥ 0; 0 for an optimal map).
      reassigned: the fraction of the points that the optimal assignment moves (in [0, 1]).
      monge_gap: ott-jax's entropic Monge gap M_ε for the cost ‖x − y‖², in the squared units of
        the map's outputs (NaN when not computed).
      epsilon: the absolute ε of M_ε (NaN when not computed).
      scale: (2/n) max_σ S(σ), the normaliser of the relative numbers.
      n: the number of points.
      monge_converged: whether ott's Sinkhorn solver converged (``False`` when not computed).
    """

    gap: float
    reassigned: float
    monge_gap: float
    epsilon: float
    scale: float
    n: int
    monge_converged: bool

    @property
    def monge_gap_relative(self) -> float:
        """(M_ε − ε log n) / scale: between ``gap`` and ``gap`` + ε log n / scale."""
        if not math.isfinite(self.monge_gap):
            return math.nan
        if self.scale <= 0.0:  # a constant map (x or T(x)): optimal, like its gap says
            return 0.0
        return (self.monge_gap - self.epsilon * math.log(self.n)) / self.scale


def transport_gap(
    sampler: Any,
    rng: jax.Array,
    n: int = 2048,
    *,
    monge: bool = True,
    epsilon: float = 0.01,
    max_iterations: int = 2000,
    rtol: float | None = None,
    space: Literal["codes", "logits"] = "codes",
    dtype: Any = None,
) -> TransportGap:
    """The cyclical-monotonicity gap and the Monge gap of a sampler's map on ``n`` prior draws.

    Draws x ``[n, d]`` from ``sampler.prior`` and measures how far ``sampler.transport`` is
    from an optimal map on the pairs (x, T(x)) (:func:`transport_gap_from_samples`). Runs on
    the host (an exact assignment in SciPy), so it is not traceable; its cost is the assignment,
    about O(n³) at worst and much less for a nearly monotone map, and ott's Sinkhorn solve,
    O(n² d + iterations · n²); ``monge=False`` skips the latter.

    Args:
      sampler: a fitted sampler, or any object with ``prior``, ``dim`` and ``transport`` (noise
        ``[n, d]`` → codes ``[n, d]``).
      rng: a JAX key for the prior draws.
      n: the number of prior draws (>= 2).
      monge: also compute ott-jax's entropic Monge gap.
      epsilon: ε of the Monge gap relative to (2/n) max_σ S (> 0).
      max_iterations: the Sinkhorn solver's iteration budget (>= 1).
      rtol: a cycle of L points of the optimal assignment gaining at most ``rtol`` × L × the
        root-mean-square norms of x and T(x) is a rounding tie and not counted; default 64 ×
        the machine epsilon of the map's output dtype (at most 1e-3).
      space: ``"codes"`` measures the map as the user samples it; ``"logits"`` measures a boxed
        sampler (``fit(bounds=...)``) before its box, the map its potential learned. The box's
        sigmoid is applied coordinate by coordinate after the learned map, and that composition
        is not the optimal map onto the boxed codes even when the learned map is optimal onto
        their logits, so the two can differ; the default is the map that produces the codes.
      dtype: the draws' dtype (default: float32, or float64 under ``jax_enable_x64``).

    Returns:
      A :class:`TransportGap`.

    Raises:
      ValueError: ``n`` < 2 or not an int, a bad ``epsilon``, ``max_iterations``, ``rtol`` or
        ``space``, a sampler without ``prior``, ``dim`` or ``transport``, or a map whose output
        has another shape than its input or is not finite.
    """
    n = _checks.check_positive_int("n", n, minimum=2)
    _check_options(epsilon, max_iterations, rtol)
    if space not in ("codes", "logits"):
        raise ValueError(f"space must be 'codes' or 'logits', got {space!r}")
    for attr in ("prior", "dim", "transport"):
        if not hasattr(sampler, attr):
            raise ValueError(f"sampler must have a {attr!r} attribute, got {type(sampler)}")
    if space == "logits" and getattr(sampler, "bounds", None) is not None:
        sampler = copy.copy(sampler)
        sampler.bounds = None
    dim = _checks.check_positive_int("sampler.dim", sampler.dim)
    dtype = jnp.result_type(float) if dtype is None else jnp.dtype(dtype)
    x = sampler.prior.sample(rng, (n, dim), dtype)
    y = sampler.transport(x)
    return transport_gap_from_samples(
        x, y, monge=monge, epsilon=epsilon, max_iterations=max_iterations, rtol=rtol
    )


def transport_gap_from_samples(
    x: jax.Array,
    y: jax.Array,
    *,
    monge: bool = True,
    epsilon: float = 0.01,
    max_iterations: int = 2000,
    rtol: float | None = None,
) -> TransportGap:
    """The gaps of the pairs (xᵢ, yᵢ = T(xᵢ)) ``[n, d]`` each (see :func:`transport_gap`).

    Args:
      x: points ``[n, d]`` (n >= 2), real and finite.
      y: their images ``[n, d]``, real and finite.
      monge, epsilon, max_iterations, rtol: as in :func:`transport_gap`.

    Returns:
      A :class:`TransportGap`.

    Raises:
      ValueError: shapes other than two equal ``[n, d]`` with n >= 2, non-real or non-finite
        values, or a bad ``epsilon``, ``max_iterations`` or ``rtol``.
    """
    x, y = np.asarray(x), np.asarray(y)  # NumPy float64 input keeps its precision on the host
    for name, a in (("x", x), ("y", y)):
        if a.ndim != 2:
            raise ValueError(f"{name} must have shape [n, d], got {a.shape}")
        if not jnp.issubdtype(a.dtype, jnp.floating):
            raise ValueError(f"{name} must be real floating point, got {a.dtype}")
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {x.shape} and {y.shape}")
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 points, got n = {n}")
    max_iterations = _check_options(epsilon, max_iterations, rtol)
    if rtol is None:
        rtol = min(64.0 * float(jnp.finfo(y.dtype).eps), 1e-3)
    xh, yh = x.astype(np.float64), y.astype(np.float64)
    if not (np.all(np.isfinite(xh)) and np.all(np.isfinite(yh))):
        raise ValueError("x and T(x) must be finite (the map returned inf or NaN)")
    gap, reassigned, top = _assignment_gap(xh, yh, float(rtol))
    scale = 2.0 * top / n
    mg, eps, converged = math.nan, math.nan, False
    if monge:
        eps = float(epsilon) * scale if scale > 0.0 else float(epsilon)
        mg, converged = _monge_gap(xh, yh, eps, max_iterations)
    return TransportGap(
        gap=gap,
        reassigned=reassigned,
        monge_gap=mg,
        epsilon=eps,
        scale=scale,
        n=n,
        monge_converged=converged,
    )


def _check_options(epsilon, max_iterations, rtol) -> int:
    """Raises ``ValueError`` naming a bad option; returns ``max_iterations`` as an int."""
    _checks.check_range("epsilon", epsilon, low=0.0, low_open=True)
    if rtol is not None:
        _checks.check_range("rtol", rtol, low=0.0)
    return _checks.check_positive_int("max_iterations", max_iterations)


def _assignment_gap(x: np.ndarray, y: np.ndarray, rtol: float) -> tuple[float, float, float]:
    """(gap, fraction reassigned, max_σ S) of float64 pairs, rounding ties not counted."""
    from scipy.optimize import linear_sum_assignment

    xc, yc = x - x.mean(0), y - y.mean(0)
    m = xc @ yc.T  # m[i, j] = ⟨x̃ᵢ, ỹⱼ⟩
    rows, sigma = linear_sum_assignment(m, maximize=True)
    sigma = sigma[np.argsort(rows)]
    diag = np.diag(m)
    gain = m[np.arange(len(sigma)), sigma] - diag  # per point; sums to ≥ 0 over each cycle
    # rounding errors of T(x) scale with the values the map computed (uncentred)
    tie = rtol * np.sqrt(np.mean(np.sum(x * x, 1)) * np.mean(np.sum(y * y, 1)))
    kept_gain, moved = 0.0, 0
    seen = np.zeros(len(sigma), bool)
    for start in np.flatnonzero(sigma != np.arange(len(sigma))):
        if seen[start]:
            continue
        cycle = []
        i = start
        while not seen[i]:
            seen[i] = True
            cycle.append(i)
            i = sigma[i]
        g = float(np.sum(gain[cycle]))
        if g > tie * len(cycle):
            kept_gain += g
            moved += len(cycle)
    identity = float(np.sum(diag))
    top = max(identity + kept_gain, 0.0)
    if top <= tie * len(sigma):  # x or T(x) constant: every assignment is optimal
        return 0.0, 0.0, top
    return kept_gain / top, moved / len(sigma), top


@functools.partial(jax.jit, static_argnames=("max_iterations",))
def _monge_jit(x, y, epsilon, max_iterations):
    """ott-jax's ``monge_gap_from_samples`` (default cost ‖x − y‖²), written with ott's core:
    its ``ott.neural`` module needs diffrax, which the library does not depend on."""
    from ott.geometry import costs, pointcloud
    from ott.solvers import linear

    cost_fn = costs.SqEuclidean()
    geom = pointcloud.PointCloud(x, y, cost_fn=cost_fn, epsilon=epsilon)
    displacement = jnp.mean(jax.vmap(cost_fn)(x, y))
    out = linear.solve(geom, max_iterations=max_iterations)
    return displacement - out.ent_reg_cost, out.converged


def _monge_gap(x, y, epsilon: float, max_iterations: int) -> tuple[float, bool]:
    """M_ε on centred float32 (float64 under x64) points; ``(value, converged)``."""
    dtype = jnp.result_type(float)
    x = jnp.asarray(x, dtype)
    y = jnp.asarray(y, dtype)
    x, y = x - jnp.mean(x, 0), y - jnp.mean(y, 0)  # M_ε is translation invariant
    with third_party_promotion():
        value, converged = _monge_jit(x, y, jnp.asarray(epsilon, dtype), max_iterations)
    return float(value), bool(converged)
