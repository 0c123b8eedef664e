"""The AE-OT batch LP (Liu et al., Eq. 14): Sinkhorn duals, a feasibility repair, an exact matching.

Between noise ``x`` [m, d] and codes ``y`` [m, d] with uniform weights 1/m the batch LP is

    max_H  mean_j H_j - mean_i H_i   s.t.  H_j - H_i <= c_ij = ½‖x_i - y_j‖².

In the usual ``f_i + g_j <= c_ij`` convention of ott-jax and POT, ``f = -H_i`` and ``g = H_j``.
Here ``phi`` is ``H_i`` (noise side) and ``psi`` is ``H_j`` (code side).

Method (:func:`solve_batch`)
----------------------------
1. The cost matrix ``C`` [m, m] is built once, from inputs centred on their common mean (the cost
   is translation invariant; centring removes most of the float32 cancellation in
   ``‖x‖² + ‖y‖² - 2 x·y``).
2. Entropic OT with ott-jax's :class:`~ott.solvers.linear.sinkhorn.Sinkhorn` in log-sum-exp mode
   on ``Geometry(cost_matrix=C)``, with ε relative to the mean of ``C``, a geometric ε schedule
   (start at ``epsilon_init`` × ε, decay ``epsilon_decay`` per iteration) and momentum.
3. Feasibility repair by exact c-transforms: ``phi_i = max_j psi_j - c_ij`` then
   ``psi_j = min_i c_ij + phi_i``. The pair is then feasible up to rounding, and each transform can
   only raise the dual objective for the given other potential, so ``dual`` is a certified lower
   bound on the optimal cost.
4. The exact assignment: the Hungarian algorithm (:func:`exact_assignment`) on
   the *reduced* costs ``c_ij + phi_i - psi_j >= 0``. The permutation is the same as on ``C`` (row
   and column shifts do not change which permutation is optimal) but, with near-optimal duals,
   the shortest augmenting path of almost every row ends at its first column, so the Hungarian
   step costs about O(m²) instead of O(m³).

The measurements behind the defaults (ε schedule, momentum vs Anderson, thresholds, cost
matrix vs point cloud, Hungarian on reduced costs) are in ``benchmarks/README.md``
(``benchmarks/aeot_lp.py``).

The solver is not differentiable: inputs pass through ``jax.lax.stop_gradient`` and the results
are constants (AE-OT uses them as regression targets).
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

with warnings.catch_warnings():
    # ott-jax imports jaxopt, which warns on import that it is no longer maintained; that one
    # warning is about ott's dependency, not something a latentot user can act on.
    warnings.filterwarnings("ignore", message=".*JAXopt.*", category=DeprecationWarning)
    from ott.geometry import epsilon_scheduler, geometry
    from ott.problems.linear import linear_problem
    from ott.solvers.linear import acceleration, sinkhorn

from latentot import _checks
from latentot._promotion import third_party_promotion

__all__ = ["BatchLP", "BatchLPSolver", "solve_batch"]

#: :meth:`BatchLPSolver.for_assignment` raises ε (relative to the mean cost) to at least this
#: for solves of which only the exact assignment is used.
ASSIGNMENT_EPSILON = 3e-3
#: :meth:`BatchLPSolver.for_assignment` caps the Sinkhorn iterations of those solves at this
#: (the Hungarian step finishes the assignment from whatever duals Sinkhorn reached).
ASSIGNMENT_MAX_ITERATIONS = 200


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class BatchLP:
    """Solution of one batch LP (leading batch axes are added by ``jax.vmap``).

    Attributes:
        phi: [m] H_i on the noise side, normalised to mean 0.
        psi: [m] H_j on the code side, shifted by the same constant as ``phi``.
        assignment: [m] int, σ(i): the code matched to noise i (an optimal permutation).
        cost: [] transport cost of the assignment, mean_i c_{i,σ(i)}.
        dual: [] dual objective mean(psi) - mean(phi) of the feasible-repaired potentials.
        dual_gap: [] ``cost - dual``, absolute (same units as the cost), >= 0 up to rounding: it
            bounds how far ``dual`` is below the optimum (``cost`` is the optimum itself).
        max_violation: [] max(0, max_ij psi_j - phi_i - c_ij), float rounding only.
        marginal_error: [] L1 error of the code-side marginal of Sinkhorn's entropic plan, the
            quantity ``threshold`` bounds (with momentum the noise side is not exact either).
        converged: [] bool: Sinkhorn stopped on ``threshold``, ``marginal_error`` is finite and
            <= ``threshold``, and every output is finite. The assignment is exact and the
            potentials feasible either way; ``converged`` says whether ``dual_gap`` is as small
            as the settings promise.
        iterations: [] int, Sinkhorn iterations run.
        epsilon: [] the absolute ε reached by the schedule (``epsilon`` × ``mean_cost``).
        mean_cost: [] mean of c_ij over all pairs, the scale ε is relative to.
    """

    phi: jax.Array
    psi: jax.Array
    assignment: jax.Array
    cost: jax.Array
    dual: jax.Array
    dual_gap: jax.Array
    max_violation: jax.Array
    marginal_error: jax.Array
    converged: jax.Array
    iterations: jax.Array
    epsilon: jax.Array
    mean_cost: jax.Array


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True, kw_only=True)
class BatchLPSolver:
    """:func:`solve_batch` with its settings: the LP solver argument of
    :func:`~latentot.aeot.fit` (``lp=BatchLPSolver(epsilon=1e-4)``).

    Frozen and hashable (a static pytree), so equal settings share one compilation. The fields
    are the keyword arguments of :func:`solve_batch`, with the same defaults and checks.
    """

    epsilon: float = 1e-3
    epsilon_init: float = 100.0
    epsilon_decay: float = 0.85
    acceleration_method: Literal["momentum", "anderson", "none"] = "momentum"
    momentum: float = 1.5
    anderson_memory: int = 5
    threshold: float = 3e-2
    max_iterations: int = 2000
    inner_iterations: int = 10

    def __post_init__(self):
        _check_hyper(
            self.epsilon, self.epsilon_init, self.epsilon_decay, self.momentum, self.threshold
        )
        for name in ("max_iterations", "inner_iterations", "anderson_memory"):
            _checks.check_positive_int(name, getattr(self, name))
        if self.acceleration_method not in ("momentum", "anderson", "none"):
            raise ValueError(
                "acceleration_method must be 'momentum', 'anderson' or 'none', "
                f"got {self.acceleration_method!r}"
            )

    def __call__(self, x, y) -> BatchLP:
        """``solve_batch(x, y, **settings)``."""
        return solve_batch(x, y, **dataclasses.asdict(self))

    def for_assignment(self) -> BatchLPSolver:
        """These settings for solves of which only ``assignment`` is used (the debiased
        targets of :mod:`latentot.aeot.targets`): ``epsilon`` raised to at least
        :data:`ASSIGNMENT_EPSILON` and ``max_iterations`` capped at
        :data:`ASSIGNMENT_MAX_ITERATIONS`.

        The assignment is an optimal permutation whatever the settings (the Hungarian step is
        exact); they only divide the work between Sinkhorn, whose duals make the Hungarian
        step cheap, and the Hungarian step. Between point sets in separated clusters (pushed
        noise once a map has learned the codes' clusters) Sinkhorn at the default ε is slow
        to reach ``threshold``, while from the duals of a larger ε, which it reaches soon, the
        Hungarian step costs little more (``benchmarks/aeot_train.py --debiased``). The
        solve's ``phi``, ``psi`` and ``dual_gap`` are those of the looser settings.
        """
        return dataclasses.replace(
            self,
            epsilon=max(self.epsilon, ASSIGNMENT_EPSILON),
            max_iterations=min(self.max_iterations, ASSIGNMENT_MAX_ITERATIONS),
        )


def solve_batch(
    x,
    y,
    *,
    epsilon: float = 1e-3,
    epsilon_init: float = 100.0,
    epsilon_decay: float = 0.85,
    acceleration_method: Literal["momentum", "anderson", "none"] = "momentum",
    momentum: float = 1.5,
    anderson_memory: int = 5,
    threshold: float = 3e-2,
    max_iterations: int = 2000,
    inner_iterations: int = 10,
) -> BatchLP:
    """Solves the batch LP (Eq. 14) between noise ``x`` and codes ``y`` with cost ½‖x - y‖².

    Sinkhorn (ott-jax) gives potentials, exact c-transforms make them feasible, and the Hungarian
    algorithm on the reduced costs gives an exact optimal permutation; see the module docstring
    for the measurements behind the defaults. Jittable and vmappable over leading batch axes of
    ``x`` and ``y`` (``jax.vmap(solve_batch)(xs, ys)`` with xs, ys [B, m, d]).

    Args:
        x: [m, d] noise samples (the H_i side).
        y: [m, d] latent codes (the H_j side). Both are cast to their common floating dtype.
        epsilon: target entropic regularisation, relative to the mean cost; > 0. May be traced;
            the other hyperparameters must be Python numbers (they are static under jit).
        epsilon_init: the schedule starts at ``epsilon_init`` × ε; >= 1 (1 disables it).
        epsilon_decay: geometric decay of the schedule per iteration, in (0, 1].
        acceleration_method: ``"momentum"`` (over-relaxation with ``momentum``), ``"anderson"``
            (ott's Anderson acceleration with ``anderson_memory`` iterates; momentum is then
            ignored) or ``"none"``.
        momentum: over-relaxation weight in (0, 2) for ``"momentum"``.
        anderson_memory: number of iterates mixed by ``"anderson"``; >= 1.
        threshold: Sinkhorn stops once the L1 marginal error is below it; > 0. The entropic plan
            itself is not returned, so a loose value is enough for good duals.
        max_iterations: cap on Sinkhorn iterations; >= 1.
        inner_iterations: the marginal error is checked every ``inner_iterations``; >= 1.

    Returns:
        A :class:`BatchLP`.

    Raises:
        ValueError: (also under ``jax.jit``) if ``x`` or ``y`` is not of rank 2, if their shapes
            differ, if m < 1, or if a hyperparameter is out of range; if concrete ``x`` or ``y``
            holds NaN or inf (traced data is not checked: non-finite data then gives
            ``converged = False``).
    """
    x, y = _check_points(x, y)
    _check_hyper(epsilon, epsilon_init, epsilon_decay, momentum, threshold)
    max_iterations = _checks.check_positive_int("max_iterations", max_iterations)
    inner_iterations = _checks.check_positive_int("inner_iterations", inner_iterations)
    anderson_memory = _checks.check_positive_int("anderson_memory", anderson_memory)
    if acceleration_method not in ("momentum", "anderson", "none"):
        raise ValueError(
            "acceleration_method must be 'momentum', 'anderson' or 'none', "
            f"got {acceleration_method!r}"
        )
    return _solve(
        x,
        y,
        jnp.asarray(epsilon, x.dtype),
        epsilon_init=float(epsilon_init),
        epsilon_decay=float(epsilon_decay),
        acceleration_method=acceleration_method,
        momentum=float(momentum),
        anderson_memory=anderson_memory,
        threshold=float(threshold),
        max_iterations=max_iterations,
        inner_iterations=inner_iterations,
    )


@functools.partial(
    jax.jit,
    static_argnames=(
        "epsilon_init",
        "epsilon_decay",
        "acceleration_method",
        "momentum",
        "anderson_memory",
        "threshold",
        "max_iterations",
        "inner_iterations",
    ),
)
def _solve(
    x: jax.Array,
    y: jax.Array,
    epsilon: jax.Array,
    *,
    epsilon_init: float,
    epsilon_decay: float,
    acceleration_method: str,
    momentum: float,
    anderson_memory: int,
    threshold: float,
    max_iterations: int,
    inner_iterations: int,
) -> BatchLP:
    """The pipeline of :func:`solve_batch` on checked inputs (jitted: ott's loops are closures
    that eager mode would retrace on every call)."""
    solver = _sinkhorn_solver(
        acceleration_method,
        momentum=momentum,
        anderson_memory=anderson_memory,
        threshold=threshold,
        max_iterations=max_iterations,
        inner_iterations=inner_iterations,
    )
    x, y = jax.lax.stop_gradient(x), jax.lax.stop_gradient(y)
    cost_matrix = half_sq_euclidean(x, y)
    mean_cost = jnp.mean(cost_matrix)
    # A zero mean cost (all points equal) would give ε = 0; any positive ε solves that LP.
    scale = jnp.maximum(mean_cost, jnp.finfo(cost_matrix.dtype).tiny)
    eps = epsilon * scale
    schedule = epsilon_scheduler.Epsilon(target=eps, init=epsilon_init, decay=epsilon_decay)
    geom = geometry.Geometry(cost_matrix=cost_matrix, epsilon=schedule)
    with third_party_promotion():
        out = solver(linear_problem.LinearProblem(geom))

    # A diverged Sinkhorn (e.g. too much momentum) leaves inf/NaN potentials; restarting the
    # repair from psi = 0 still gives feasible duals and an exact (if slower) Hungarian step.
    g = jnp.where(jnp.all(jnp.isfinite(out.g)), out.g, jnp.zeros_like(out.g))
    phi, psi = repair_duals(cost_matrix, g)
    assignment = exact_assignment(reduced_costs(cost_matrix, phi, psi))
    shift = jnp.mean(phi)
    phi, psi = phi - shift, psi - shift

    m = cost_matrix.shape[0]
    cost = jnp.mean(cost_matrix[jnp.arange(m), assignment])
    dual = jnp.mean(psi) - jnp.mean(phi)
    violation = jnp.maximum(jnp.max(psi[None, :] - phi[:, None] - cost_matrix), 0)
    marginal_error = _marginal_error(out, m)
    finite = (
        jnp.all(jnp.isfinite(phi))
        & jnp.all(jnp.isfinite(psi))
        & jnp.isfinite(cost)
        & jnp.isfinite(marginal_error)
        & jnp.isfinite(violation)
    )
    return BatchLP(
        phi=phi,
        psi=psi,
        assignment=assignment,
        cost=cost,
        dual=dual,
        dual_gap=cost - dual,
        max_violation=violation,
        marginal_error=marginal_error,
        converged=out.converged & finite & (marginal_error <= threshold),
        iterations=jnp.asarray(out.n_iters),
        epsilon=eps,
        mean_cost=mean_cost,
    )


def half_sq_euclidean(x: jax.Array, y: jax.Array) -> jax.Array:
    """Returns the cost matrix c_ij = ½‖x_i - y_j‖², [m, n], from x [m, d] and y [n, d].

    Both point sets are first centred on their common mean (the cost is translation invariant),
    then ``½‖x‖² + ½‖y‖² - x·y`` is clipped at 0 to remove negative rounding.
    """
    centre = (jnp.sum(x, axis=0) + jnp.sum(y, axis=0)) / (x.shape[0] + y.shape[0])
    x, y = x - centre, y - centre
    xx = 0.5 * jnp.sum(x * x, axis=1)
    yy = 0.5 * jnp.sum(y * y, axis=1)
    xy = jnp.matmul(x, y.T, precision=jax.lax.Precision.HIGHEST)
    return jnp.maximum(xx[:, None] + yy[None, :] - xy, 0)


def repair_duals(cost_matrix: jax.Array, psi: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Returns feasible potentials (phi, psi), H_j - H_i <= c_ij, by two exact c-transforms.

    ``phi_i = max_j psi_j - c_ij`` is the smallest phi feasible with the given psi, then
    ``psi_j = min_i c_ij + phi_i`` the largest psi feasible with that phi (the second step can
    only raise the dual objective). Seeding from Sinkhorn's phi instead (``psi`` first) gave the
    same dual to within 1e-6 of the cost, and further rounds change nothing (the pair is
    c-concave after two transforms).

    Args:
        cost_matrix: [m, n] costs c_ij.
        psi: [n] code-side potentials H_j, possibly infeasible with any phi.

    Returns:
        (phi, psi), [m] and [n], feasible up to float rounding.
    """
    phi = jnp.max(psi[None, :] - cost_matrix, axis=1)
    psi = jnp.min(cost_matrix + phi[:, None], axis=0)
    return phi, psi


def reduced_costs(cost_matrix: jax.Array, phi: jax.Array, psi: jax.Array) -> jax.Array:
    """Returns c_ij + phi_i - psi_j, [m, n], clipped at 0 (it is >= 0 up to rounding)."""
    return jnp.maximum(cost_matrix + phi[:, None] - psi[None, :], 0)


def exact_assignment(costs: jax.Array) -> jax.Array:
    """Returns σ [m], an optimal permutation for the square ``costs`` [m, m] (Hungarian).

    The Hungarian algorithm by shortest augmenting paths (the e-maxx form of optax's
    ``hungarian_algorithm``, in the default float dtype), started from a partial matching:
    after subtracting each row's minimum, every row whose zero lies in a column that no
    earlier row's zero lies in is matched there (a valid start: the duals are feasible and
    the matched pairs tight), and only the other rows search for augmenting paths. On the
    reduced costs of near-optimal duals (as :func:`solve_batch` and the debiased targets pass)
    most rows are matched by that start.
    """
    costs = costs.astype(jnp.result_type(float))
    m = costs.shape[0]
    if m == 0:
        return jnp.zeros(0, jnp.int32)
    # Non-finite costs (from non-finite data) become a finite cost above all others, so that
    # every search still ends at a free column; the result is then some permutation.
    finite = jnp.isfinite(costs)
    top = 2 * jnp.max(jnp.where(finite, jnp.abs(costs), 0)) + 1
    costs = jnp.where(finite, costs, top)
    row_min = jnp.min(costs, axis=1)
    first = jnp.argmin(costs, axis=1).astype(jnp.int32)
    rows = jnp.arange(m, dtype=jnp.int32)
    claim = jnp.full(m, m, jnp.int32).at[first].min(rows)  # the first row whose zero is in column j
    matched = claim[first] == rows
    # e-maxx arrays, 1-based: parent[j] is the row (1..m) matched to column j (0: free); u[m+1]
    # absorbs the updates of unused slots.
    parent = jnp.zeros(m + 1, jnp.int32).at[1:].set(jnp.where(claim < m, claim + 1, 0))
    u = jnp.zeros(m + 2, costs.dtype).at[1 : m + 1].set(row_min)
    v = jnp.zeros(m + 1, costs.dtype)
    inf = jnp.asarray(jnp.inf, costs.dtype)

    def row_fn(state, row):
        # A matched row runs no step of either loop (a loop's condition, not a lax.cond, whose
        # branches vmap would both run: a search from a matched row never ends once every
        # column is taken).
        u, v, parent = state
        todo = ~matched[row]
        parent = parent.at[0].set(row + 1)

        def step(carry):
            u, v, used, minv, path, col = carry
            used = used.at[col].set(True)
            free = ~used[1:]
            i = parent[col]
            cur = jnp.where(free, costs[i - 1] - u[i] - v[1:], inf)
            better = cur < minv
            path = jnp.where(better, col, path)
            minv = jnp.where(better, cur, minv)
            delta = jnp.min(jnp.where(free, minv, inf))
            nxt = jnp.argmin(jnp.where(free, minv, inf)).astype(jnp.int32) + 1
            u = u.at[jnp.where(used, parent, m + 1)].add(delta)
            v = jnp.where(used, v - delta, v)
            minv = jnp.where(free, minv - delta, minv)
            return u, v, used, minv, path, nxt

        path, col = jnp.zeros(m, jnp.int32), jnp.int32(0)
        init = (u, v, jnp.zeros(m + 1, bool), jnp.full(m, inf), path, col)
        u, v, _, _, path, col = jax.lax.while_loop(lambda c: todo & (parent[c[5]] != 0), step, init)

        def back(carry):
            parent, col = carry
            prev = path[col - 1]
            return parent.at[col].set(parent[prev]), prev

        parent, _ = jax.lax.while_loop(lambda c: todo & (c[1] != 0), back, (parent, col))
        return (u, v, parent), None

    (_, _, parent), _ = jax.lax.scan(row_fn, (u, v, parent), rows)
    return jnp.zeros(m, jnp.int32).at[parent[1:] - 1].set(rows)


def _marginal_error(out: sinkhorn.SinkhornOutput, m: int) -> jax.Array:
    """L1 error of the code-side marginal of Sinkhorn's plan, sum_j |sum_i P_ij - 1/m|.

    The quantity ott compares with ``threshold`` (its ``converged`` flag can be True while the
    potentials are inf), recomputed from the returned potentials so that non-finite values show.
    """
    plan = out.matrix
    target = jnp.asarray(1.0 / m, plan.dtype)
    return jnp.sum(jnp.abs(jnp.sum(plan, axis=0) - target))


def _sinkhorn_solver(
    method: str,
    *,
    momentum: float,
    anderson_memory: int,
    threshold: float,
    max_iterations: int,
    inner_iterations: int,
) -> sinkhorn.Sinkhorn:
    """Builds the ott Sinkhorn solver (log-sum-exp mode, no differentiation machinery)."""
    kwargs = {}
    if method == "momentum":
        kwargs["momentum"] = acceleration.Momentum(value=momentum)
    elif method == "anderson":
        kwargs["anderson"] = acceleration.AndersonAcceleration(memory=anderson_memory)
    return sinkhorn.Sinkhorn(
        lse_mode=True,
        threshold=threshold,
        max_iterations=max_iterations,
        inner_iterations=inner_iterations,
        implicit_diff=None,
        **kwargs,
    )


def _check_points(x, y) -> tuple[jax.Array, jax.Array]:
    """Validates x, y [m, d]; returns them in their common floating dtype.

    Finiteness is checked only on host (NumPy) inputs, which are already in memory; device
    arrays are never copied back for it (non-finite data then gives ``converged = False``).
    """
    x_host, y_host = x, y
    x = _checks.as_float("x", x)
    y = _checks.as_float("y", y)
    for name, z in (("x", x), ("y", y)):
        if z.ndim != 2:
            raise ValueError(f"{name} must have rank 2, [m, d], got shape {z.shape}")
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape [m, d], got x{x.shape} and y{y.shape}")
    if x.shape[0] < 1:
        raise ValueError(f"x and y need m >= 1 points, got shape {x.shape}")
    for name, z in (("x", x_host), ("y", y_host)):
        if isinstance(z, np.ndarray) and not np.all(np.isfinite(z)):
            raise ValueError(f"{name} must be finite, it holds NaN or inf")
    dtype = np.promote_types(x.dtype, y.dtype)  # an explicit cast (NumPy rule)
    return x.astype(dtype), y.astype(dtype)


def _check_hyper(epsilon, epsilon_init, epsilon_decay, momentum, threshold) -> None:
    """Range checks on the float hyperparameters (concrete values only)."""
    _checks.check_range("epsilon", epsilon, low=0.0, low_open=True)
    _checks.check_range("epsilon_init", epsilon_init, low=1.0)
    _checks.check_range("epsilon_decay", epsilon_decay, low=0.0, high=1.0, low_open=True)
    _checks.check_range("momentum", momentum, low=0.0, high=2.0, low_open=True, high_open=True)
    _checks.check_range("threshold", threshold, low=0.0, low_open=True)
