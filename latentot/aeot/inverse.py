"""The inverse of the AE-OT map: codes → noise, by damped Newton on ``x + ∇D(x) = y``.

Method (:meth:`latentot.aeot.Sampler.inverse_transport`):

* A frame sampler (``method="pursuit"``) is inverted exactly where it is linear or made of
  monotone layers (:meth:`~latentot.aeot.pursuit.Frame.complement_inverse`); only the learned
  k-dimensional block (k ≤ 32) needs an iterative solve.
* The learned map ``f(x) = x + ∇D(x) = ∇φ(x)`` (the whole map of a plain sampler) is inverted
  row by row by damped Newton on ``F(x) = f(x) − y``. The starts are the inverse of the
  potential's Bures base ``x₀ = A⁻¹(y − b)`` (``x₀ = y`` without a base) and the fixed prior
  draws (anchors) whose images lie nearest to the code; every start takes a few screening steps
  and the two best go on (:func:`newton_inverse`). A step solves the Levenberg-Marquardt system
  ``(JᵀJ + μ I) s = Jᵀ F(x)``, with J the Hessian of φ by ``jax.jacfwd`` and μ = (10⁻³ × its
  mean absolute eigenvalue)², through one eigen-decomposition (for a learned dimension up to
  :data:`DENSE_JACOBIAN_MAX_DIM`; above it ``J s = F(x)`` is solved matrix-free by GMRES on
  Jacobian-vector products). It is a descent direction of ‖F‖² where φ is not convex, and the
  Newton step where J is well conditioned. The step lengths 1, ½, …, 2⁻⁷ are tried at once
  and the best point is kept if it lowers the merit: the residual never grows, and a singular
  Jacobian gives no NaN. From each kept start the full solve follows two paths and keeps the
  better: half its steps on ψ(x) = φ(x) − ⟨x, y⟩ (the convex conjugate's objective,
  continuous across the cells of a maximum of heads; the Hessian shifted to positive definite)
  and half on the residual, or all on the residual.
* The potential need not be convex, so ``f`` may be neither injective nor onto: with a hard
  maximum of heads (``temperature = 0``) a code in the gap between two cells' images, and with
  any potential a code far outside the codes, has no exact preimage.
  Newton then stops at the point of smallest residual it found, and the result says so:
  ``return_info=True`` gives the per-row residual ``‖T(x) − y‖ / √d`` (measured with the
  forward map itself) and a ``converged`` mask, ``residual ≤ rtol · s`` with s the codes'
  root-mean-square standard deviation. Inside ``jax.jit`` nothing can raise: check the mask,
  or call :meth:`InverseInfo.check` on the host, which raises :class:`InverseNotConvergedError`.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "DENSE_JACOBIAN_MAX_DIM",
    "InverseInfo",
    "InverseNotConvergedError",
    "newton_inverse",
]

#: Learned dimensions up to this use the dense Jacobian (``jax.jacfwd``); above, GMRES.
DENSE_JACOBIAN_MAX_DIM = 256

#: Step lengths tried at every Newton step (all at once).
_STEP_LENGTHS = 2.0 ** -np.arange(8)


class InverseNotConvergedError(ValueError):
    """Some codes have no preimage within the tolerance (see :meth:`InverseInfo.check`)."""


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class InverseInfo:
    """How well :meth:`~latentot.aeot.Sampler.inverse_transport` solved ``T(x) = y``.

    Attributes:
      residual: ``[...]``, ``‖T(x) − y‖ / √d`` per code (root-mean-square error per coordinate,
        in the codes' units).
      converged: ``[...]`` bool, ``residual ≤ tolerance``.
      tolerance: scalar, ``rtol ×`` the codes' root-mean-square standard deviation.
    """

    residual: jax.Array
    converged: jax.Array
    tolerance: jax.Array

    def check(self) -> None:
        """Raises :class:`InverseNotConvergedError` if any code did not converge (host only).

        Raises:
          InverseNotConvergedError: naming how many codes failed and the worst residual.
        """
        converged = np.asarray(self.converged)
        if converged.all():
            return
        residual = np.asarray(self.residual)
        bad = np.flatnonzero(~converged.ravel())
        raise InverseNotConvergedError(
            f"inverse_transport did not converge for {bad.size} of {converged.size} codes "
            f"(first index {int(bad[0])}; worst residual {float(residual.max()):.3g} > "
            f"tolerance {float(self.tolerance):.3g}): those codes are not in the image of the "
            "map (between its clusters) or far outside the codes' range"
        )


def newton_inverse(
    phi, y: jax.Array, starts: jax.Array, iterations: int, *, keep: int = 2, screen: int = 6
) -> jax.Array:
    """Solves ``∇φ(x) = y`` row by row by damped Newton from many starts; the best one wins.

    With more than ``keep`` starts, every start first takes ``screen`` Levenberg-Marquardt steps
    on the residual, and only the ``keep`` best of each row go on to the full solve
    (``iterations`` steps): a non-convex φ has residual minima that are not preimages, and a
    start in the right basin is what finds the preimage, so it pays to try many cheaply.

    Args:
      phi: the potential of one point, ``[k] → []`` (the map is its gradient).
      y: targets ``[n, k]``.
      starts: starting points ``[S, n, k]`` (or ``[n, k]``).
      iterations: Newton steps of the full solve (static).
      keep: starts per row that get the full solve (static).
      screen: steps of the screening (static).

    Returns:
      ``[n, k]``: per row, the point of smallest residual ``‖∇φ(x) − y‖`` found.
    """
    starts = starts[None] if starts.ndim == 2 else starts
    grad = jax.vmap(jax.vmap(jax.grad(phi)))

    def best(xs, count):  # the `count` points of smallest residual per row: [count, n, k]
        r = jnp.sum((grad(xs) - y[None]) ** 2, axis=-1)  # [S, n]
        r = jnp.where(jnp.isfinite(r), r, jnp.inf)
        order = jnp.argsort(r, axis=0)[:count]  # [count, n]
        return jnp.take_along_axis(xs, order[:, :, None], axis=0)

    def run(fn, xs):
        return jax.vmap(jax.vmap(fn), in_axes=(None, 0))(y, xs)

    if starts.shape[0] > keep:
        screened = run(functools.partial(_solve_one, phi, iterations=screen, screen=True), starts)
        starts = best(screened, keep)
    xs = run(functools.partial(_solve_one, phi, iterations=iterations, screen=False), starts)
    return best(xs, 1)[0]


def _solve_one(phi, y, x0, *, iterations, screen):
    k = y.shape[-1]
    lengths = jnp.asarray(_STEP_LENGTHS, y.dtype)
    grad = jax.grad(phi)

    def conjugate_gap(x):  # ψ: its minimum is a preimage when φ is convex
        v = phi(x) - jnp.dot(x, y)
        return jnp.where(jnp.isfinite(v), v, jnp.inf)

    def residual(x):  # ‖∇φ(x) − y‖²: zero at every preimage
        r = grad(x) - y
        v = jnp.dot(r, r)
        return jnp.where(jnp.isfinite(v), v, jnp.inf)

    def direction(x, g, gauss_newton):
        if k <= DENSE_JACOBIAN_MAX_DIM:
            h = jax.jacfwd(grad)(x)
            lam, vec = jnp.linalg.eigh(0.5 * (h + h.T))
            scale = jnp.mean(jnp.abs(lam)) + jnp.finfo(y.dtype).tiny
            if gauss_newton:
                # Levenberg-Marquardt on ‖F‖²: (JᵀJ + μ I) s = Jᵀ F with J = H symmetric. A
                # descent direction of the residual even where H is indefinite, and the Newton
                # step H⁻¹ F (quadratic convergence) where H is well conditioned.
                mu = (1e-3 * scale) ** 2
                w = lam / (lam * lam + mu)
            else:
                # ψ's modified Newton: H shifted to positive definite.
                w = 1.0 / (lam + jnp.maximum(-lam[0], 0.0) + 1e-6 * scale)
            return vec @ (w * (vec.T @ g))
        step, _ = jax.scipy.sparse.linalg.gmres(
            lambda v: jax.jvp(grad, (x,), (v,))[1], g, restart=min(k, 30), maxiter=2
        )
        return step

    def descend(merit, x, steps):
        def body(_, state):
            x, e = state
            g = grad(x) - y
            s = direction(x, g, merit is residual)
            s = jnp.where(jnp.all(jnp.isfinite(s)), s, g)
            trials = x[None, :] - lengths[:, None] * s[None, :]
            es = jax.vmap(merit)(trials)
            best = jnp.argmin(es)
            better = es[best] < e
            return jnp.where(better, trials[best], x), jnp.where(better, es[best], e)

        return jax.lax.fori_loop(0, steps, body, (x, merit(x)))[0]

    # ψ first (it is continuous across the jumps of a max of heads, so its line search walks
    # between the map's cells), then the residual (a non-convex φ has minima of ψ that are not
    # preimages; the residual's own minima are), and the residual from the start point too;
    # the smaller residual wins.
    if screen:
        return descend(residual, x0, iterations)
    first = iterations // 2
    x1 = descend(residual, descend(conjugate_gap, x0, first), iterations - first)
    x2 = descend(residual, x0, iterations - first)
    return jnp.where(residual(x1) <= residual(x2), x1, x2)
