"""Regression targets of the AE-OT potential, one function per training method.

Both methods draw noise ``x`` [m, d] and a code batch ``y`` [m, d] and return, for each noise
point, the displacement ``∇D(x_i)`` should take (and, for Liu's method, the value ``D(x_i)``):

* ``"minibatch"`` (Liu et al., Algorithm 1): the batch LP between ``x`` and ``y``; the target
  displacement is ``y_σ(i) − x_i`` and the value target the LP's noise-side potential ``H_i``.
  In dimension d ≳ 16 the assignment of an m-point LP is far from the optimal map T*(x_i), and
  regressing on it pulls the map towards the codes' mean.
* ``"debiased"``: the LPs are solved between the currently pushed noise ``u = T(x)`` and the
  codes, and between ``u`` and an independent pushed batch ``u' = T(x')``. The target of T(x_i)
  is ``u_i + (y_σ(i) − u_i) − (u'_τ(i) − u_i)``: the minibatch displacement towards the codes
  minus the self-transport displacement, in the spirit of Sinkhorn divergences (Feydy et al.
  2019). When T#P = Q both displacements have the same law, so the minibatch bias cancels and
  the fixed point is a map that pushes P onto Q; the regression onto ∇D keeps it a gradient.
  Every gradient map that pushes P onto Q is such a fixed point, and training drifted along
  them, away from the optimal one ("more training makes it worse"). So the corrected
  points ``v_i = u_i + y_σ(i) − u'_τ(i)`` are rearranged by a third assignment, between the
  noise ``x`` and ``u`` itself (exact, on the potential's Bregman costs): the target of x_i
  is ``v_π(i)``. The optimal map's pairs (x_i, T*(x_i)) are
  cyclically monotone, so for it π is the identity and the fixed point stays; for any other
  map π moves points, towards the monotone rearrangement of the same batch law.

Each function returns ``(phi, target, stats)``: ``phi`` [m] or ``None`` (no value term),
``target`` [m, d] the displacement target (constants, no gradient flows through them) and a
dict of scalar LP diagnostics.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from latentot.aeot.lp import exact_assignment

__all__ = ["METHODS", "debiased_targets", "minibatch_targets"]

METHODS = ("debiased", "minibatch")
# LP diagnostics recorded in the history when the solver returns them.
LP_STATS = ("cost", "dual_gap", "max_violation", "converged")


def _lp_stats(lp, prefix: str) -> dict[str, jax.Array]:
    stats = {}
    for name in LP_STATS:
        value = getattr(lp, name, None)
        if value is not None:
            stats[prefix + name] = jnp.asarray(value)
    return stats


def minibatch_targets(solver: Callable, x: jax.Array, y: jax.Array):
    """Liu et al.'s targets: the batch LP between noise ``x`` and codes ``y`` (both [m, d]).

    Returns:
      ``(phi, y_σ − x, stats)`` with ``phi`` the LP's noise-side potential, mean 0.
    """
    lp = solver(x, y)
    phi = jax.lax.stop_gradient(lp.phi)
    phi = phi - jnp.mean(phi)
    target = jax.lax.stop_gradient(y[lp.assignment] - x)
    return phi, target, _lp_stats(lp, "lp_")


def debiased_targets(
    solver: Callable,
    x: jax.Array,
    u: jax.Array,
    u_self: jax.Array,
    y: jax.Array,
    phi_x: jax.Array | None = None,
):
    """Debiased targets between pushed noise and codes (all [m, d]).

    Args:
      solver: the batch LP solver, ``solver(a, b)`` with ``.assignment``; only the
        assignments are used, so a solver with a ``for_assignment()`` method (as
        :class:`~latentot.aeot.BatchLPSolver`) is replaced by what that returns (the same
        optimal permutations, cheaper).
      x: the noise.
      u: ``T(x)``, the pushed noise.
      u_self: ``T(x')`` for independent noise ``x'``.
      y: the codes.
      phi_x: ``[m]`` the map's potential φ at ``x`` (``T = ∇φ``), or None. With it, π is the
        exact assignment on the reduced costs ``φ(x_i) − φ(x_j) − ⟨u_j, x_i − x_j⟩`` (the
        Bregman divergence of φ: the costs ``½‖x_i − u_j‖²`` shifted by the duals that φ
        gives, so the same permutation), which are ≥ 0 with a zero diagonal where φ is convex:
        the Hungarian step then costs about O(m²) and no Sinkhorn is needed.

    Returns:
      ``(None, target, stats)`` with ``target_i = v_π(i) − x_i``, ``v = u + y_σ − u'_τ``: σ
      the LP between ``u`` and ``y``, τ the LP between ``u`` and ``u_self``, π the LP between
      ``x`` and ``u``; ``stats["monotone_moved"]`` is the fraction of points π moves.
    """
    # Only the assignments are used: a solver that offers settings for that (BatchLPSolver's
    # for_assignment) solves with them; the permutations are the same optimal ones.
    for_assignment = getattr(solver, "for_assignment", None)
    if for_assignment is not None:
        solver = for_assignment()
    to_codes = solver(u, y)
    to_self = solver(u, u_self)
    # Cyclical monotonicity: the LP between the noise and its own images pairs x_i with
    # u_π(i); π is the identity exactly when the pairs (x_i, u_i) are cyclically monotone, as
    # those of an optimal map are. Rearranging the corrected points by π leaves the batch's law
    # unchanged and pulls the map towards the monotone one among the maps with that law.
    if phi_x is None:
        pi = solver(x, u).assignment
    else:
        xu = x @ u.T  # ⟨x_i, u_j⟩
        bregman = phi_x[:, None] - phi_x[None, :] - (xu - jnp.diagonal(xu)[None, :])
        pi = exact_assignment(jax.lax.stop_gradient(bregman))
    new = (u + y[to_codes.assignment] - u_self[to_self.assignment])[pi]
    target = jax.lax.stop_gradient(new - x)
    stats = _lp_stats(to_codes, "lp_")
    stats["lp_self_cost"] = jnp.asarray(to_self.cost)
    stats["monotone_moved"] = jnp.mean(pi != jnp.arange(x.shape[0]))
    return None, target, stats
