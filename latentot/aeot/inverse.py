"""The inverse of the AE-OT map: codes → noise, by damped Newton on ``x + ∇D(x) = y``.

Method (:meth:`latentot.aeot.Sampler.inverse_transport`):

* A frame sampler (``method="pursuit"``) is inverted exactly where it is linear or made of
  monotone layers (:meth:`~latentot.aeot.pursuit.Frame.complement_inverse`); only the learned
  k-dimensional block (k ≤ 32) needs an iterative solve.
* The learned map ``f(x) = x + ∇D(x) = ∇φ(x)`` (the whole map of a plain sampler) is inverted
  by :func:`solve_inverse`, one program over all codes. The starts are the inverse of the
  potential's Bures base ``x₀ = A⁻¹(y − b)`` (``x₀ = y`` without a base) and fixed prior draws
  (anchors) whose images, computed once per sampler, lie nearest to the code: the distance to an
  anchor's image is its residual, so the screening of the starts costs no gradient. Every code
  first takes a few quasi-Newton steps (:func:`broyden_solve`: one gradient a step, Broyden's
  update of an inverse Jacobian that starts as ``A⁻¹``) from the better of ``x₀`` and its nearest
  anchor, and stops once converged; the few codes left over restart from the Hessian at their
  best point, and those still left go to the many-start damped Newton below, in small chunks.
* The many-start damped Newton (:func:`newton_inverse`) solves ``F(x) = f(x) − y`` from every
  start: each takes a few screening steps and the two best go on. A step solves the
  Levenberg-Marquardt system ``(JᵀJ + μ I) s = Jᵀ F(x)``, with J the Hessian of φ (its columns
  are forward-mode Jacobian-vector products) and μ = (10⁻³ × its mean absolute eigenvalue)²,
  through one eigen-decomposition (for a learned dimension up to
  :data:`DENSE_JACOBIAN_MAX_DIM`; above it ``J s = F(x)`` is solved matrix-free by GMRES on
  Jacobian-vector products). It is a descent direction of ‖F‖² where φ is not convex, and the
  Newton step where J is well conditioned. The step lengths 1, ½, …, 2⁻⁷ are tried at once
  and the best point is kept if it lowers the merit: the residual never grows, and a singular
  Jacobian gives no NaN. From each kept start the full solve follows two paths and keeps the
  better: half its steps on ψ(x) = φ(x) − ⟨x, y⟩ (the convex conjugate's objective, continuous
  across the cells of a maximum of heads; the Hessian shifted to positive definite) and half
  on the residual, or all on the residual. The screening and both paths of every start run in
  one loop over a fixed number of lanes per code, sharing one Newton step, so that the program
  evaluates the network in few places: each place is compiled separately, and the compilation
  is most of the first call's time.
* The potential need not be convex, so ``f`` may be neither injective nor onto: with a hard
  maximum of heads (``temperature = 0``) a code in the gap between two cells' images, and with
  any potential a code far outside the codes, has no exact preimage.
  Newton then stops at the point of smallest residual it found, and the result says so:
  ``return_info=True`` gives the per-row residual ``‖T(x) − y‖ / √d`` (measured with the
  forward map itself) and a ``converged`` mask, ``residual ≤ rtol · s`` with s the codes'
  root-mean-square standard deviation, in the units of the residual (for a boxed sampler, of
  its own samples in the box). Inside ``jax.jit`` nothing can raise: check the mask,
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
    "broyden_solve",
    "hessian_inverse",
    "newton_inverse",
    "solve_inverse",
]

#: Learned dimensions up to this use the dense Jacobian (k Jacobian-vector products); above,
#: GMRES.
DENSE_JACOBIAN_MAX_DIM = 256

#: Quasi-Newton steps of the first pass over all rows (:func:`solve_inverse`).
FAST_STEPS = 8

#: Quasi-Newton steps of the second pass (rows not converged in the first).
RETRY_STEPS = 16

#: Rows per chunk of the second pass.
RETRY_CHUNK = 32

#: Rows per chunk of the third pass (the many-start damped Newton of :func:`newton_inverse`).
ROBUST_CHUNK = 8

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
      tolerance: scalar, ``rtol ×`` the codes' root-mean-square standard deviation (in the
        residual's units: for a sampler with ``bounds``, the spread of its own samples in the
        box).
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


def solve_inverse(
    phi,
    y: jax.Array,
    starts: jax.Array,
    *,
    tolerance: float | jax.Array,
    iterations: int,
    jacobian_inverse: jax.Array | None = None,
    passes: str = "all",
) -> jax.Array:
    """Solves ``∇φ(x) = y`` row by row in three passes; only the rows left over pay for more.

    1. Every row: quasi-Newton (:func:`broyden_solve`, :data:`FAST_STEPS` steps) from the better
       of ``starts[0]`` and ``starts[1]``, with ``jacobian_inverse`` as the first inverse
       Jacobian (the Hessian's at the start where it is ``None``). Converged rows stop.
    2. The rows whose residual ``‖∇φ(x) − y‖ / √k`` is still above ``tolerance``, in chunks of
       :data:`RETRY_CHUNK`: quasi-Newton again (:data:`RETRY_STEPS` steps) from their best point,
       starting from the Hessian there.
    3. The rows still above it, in chunks of :data:`ROBUST_CHUNK`: :func:`newton_inverse` from
       all ``starts`` and the row's best point (``iterations`` steps).

    A pass keeps a row's new point only where its residual is smaller. Passes 2 and 3 loop over
    the rows that need them (``lax.while_loop``), so a batch whose rows all converge in pass 1
    costs about ``FAST_STEPS`` gradient evaluations a row.

    Args:
      phi: the potential of one point, ``[k] → []`` (the map is its gradient).
      y: targets ``[n, k]``.
      starts: ``[S, n, k]``, S >= 2; ``starts[:2]`` are the candidates of pass 1.
      tolerance: a row is done when its residual ``‖∇φ(x) − y‖ / √k`` is at most this.
      iterations: Newton steps of pass 3 (static); 0 returns the better of ``starts[:2]``.
      jacobian_inverse: ``[k, k]``, an approximate inverse of ∇²φ for every row, or ``None``.
      passes: ``"all"``; ``"fast"``: passes 1 and 2 only; ``"robust"``: pass 3 only, on every
        row at once (static). Pass 3's program is the largest part of the compilation, so a
        caller on the host can run ``"fast"`` and then ``"robust"`` on the rows left over.

    Returns:
      ``[n, k]``: per row, the point of smallest residual found.
    """
    if passes not in ("all", "fast", "robust"):
        raise ValueError(f"passes must be 'all', 'fast' or 'robust', got {passes!r}")
    n, k = y.shape
    grad = jax.vmap(jax.grad(phi))
    tol2 = jnp.asarray(tolerance, y.dtype) ** 2 * k

    # Both candidates through one gradient (each evaluation of the network in the program is
    # compiled separately: fewer of them compile faster).
    f = (grad(starts[:2].reshape(2 * n, k)) - jnp.tile(y, (2, 1))).reshape(2, n, k)
    r = jnp.sum(f * f, axis=-1)
    r = jnp.where(jnp.isfinite(r), r, jnp.inf)
    first = (r[1] < r[0])[:, None]
    x = jnp.where(first, starts[1], starts[0])
    if iterations == 0 or n == 0:
        return x
    if passes == "robust":
        return newton_inverse(phi, y, starts, iterations)
    f = jnp.where(first, f[1], f[0])
    if jacobian_inverse is None:
        binv, _ = _hessian_inverse_and_gradient(phi, x)
    else:
        binv = jnp.broadcast_to(jacobian_inverse.astype(y.dtype), (n, k, k))
    x, r2 = broyden_solve(phi, y, x, binv, FAST_STEPS, tol2, f0=f)

    def retry(rows, x_rows):
        binv, g = _hessian_inverse_and_gradient(phi, x_rows)
        return broyden_solve(phi, y[rows], x_rows, binv, RETRY_STEPS, tol2, f0=g - y[rows])

    def robust_pass(rows, x_rows):
        rows_starts = jnp.concatenate([x_rows[None], starts[:, rows]])
        return _newton_rows(phi, y[rows], rows_starts, iterations)

    x, r2 = _over_pending(retry, x, r2, tol2, min(n, RETRY_CHUNK))
    if passes == "all":
        x, r2 = _over_pending(robust_pass, x, r2, tol2, min(n, ROBUST_CHUNK))
    return x


def _over_pending(solve, x, r2, tol2, chunk):
    """Runs ``solve(rows, x[rows]) → (x', r2')`` on the rows with ``r2 > tol2``,
    ``chunk`` rows at a time (the worst first), keeping each row's better point."""

    def cond(state):
        return jnp.any(state[2])

    def body(state):
        x, r2, pending = state
        _, rows = jax.lax.top_k(jnp.where(pending, r2, -jnp.inf), chunk)
        valid = pending[rows]
        xn, rn = solve(rows, x[rows])
        better = valid & (rn < r2[rows])
        x = x.at[rows].set(jnp.where(better[:, None], xn, x[rows]))
        r2 = r2.at[rows].set(jnp.where(better, rn, r2[rows]))
        return x, r2, pending.at[rows].set(False)

    x, r2, _ = jax.lax.while_loop(cond, body, (x, r2, r2 > tol2))
    return x, r2


def hessian_inverse(phi, x: jax.Array) -> jax.Array:
    """``[n, k] → [n, k, k]``: the Levenberg-Marquardt inverse ``(H² + μI)⁻¹ H`` of φ's Hessian
    H at each row, with μ = (10⁻³ × its mean absolute eigenvalue)² (finite where H is singular)."""
    return _hessian_inverse_and_gradient(phi, x)[0]


def _hessian_inverse_and_gradient(phi, x):
    """:func:`hessian_inverse` ``[n, k, k]`` and the gradient ``∇φ(x)`` ``[n, k]`` that comes
    with the Hessian (one evaluation of the network)."""
    k = x.shape[-1]
    grad = jax.grad(phi)

    def one(x):  # the Hessian's columns are Jacobian-vector products; the gradient comes along
        return jax.vmap(lambda v: jax.jvp(grad, (x,), (v,)), out_axes=(None, 0))(
            jnp.eye(k, dtype=x.dtype)
        )

    g, h = jax.vmap(one)(x)
    lam, vec = jnp.linalg.eigh(0.5 * (h + jnp.swapaxes(h, -1, -2)))
    scale = jnp.mean(jnp.abs(lam), axis=-1, keepdims=True) + jnp.finfo(x.dtype).tiny
    w = lam / (lam * lam + (1e-3 * scale) ** 2)
    binv = jnp.einsum("nij,nj,nlj->nil", vec, w, vec)
    eye = jnp.eye(x.shape[-1], dtype=x.dtype)
    return jnp.where(jnp.all(jnp.isfinite(binv), axis=(-2, -1), keepdims=True), binv, eye), g


def broyden_solve(
    phi, y, x0, binv0, steps: int, tol2, *, f0: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
    """Quasi-Newton on ``∇φ(x) = y`` for rows ``[n, k]``: Broyden's (good) update of the inverse
    Jacobian ``binv0`` ``[n, k, k]``, one gradient a step.

    A step ``x − α B⁻¹ F(x)`` is taken only where it lowers ``‖F‖²`` (then α doubles, up to 1),
    otherwise α halves; the secant of every trial updates ``B⁻¹``. The loop stops when every
    row's ``‖F‖² ≤ tol2`` or after ``steps`` steps (static). ``f0`` ``[n, k]`` is
    ``F(x0) = ∇φ(x0) − y`` where the caller has it already.

    Returns:
      ``(x [n, k], ‖F(x)‖² [n])``: the point of smallest residual per row.
    """
    grad = jax.vmap(jax.grad(phi))
    dtype = y.dtype

    def merit(f):
        v = jnp.sum(f * f, axis=-1)
        return jnp.where(jnp.isfinite(v), v, jnp.inf)

    def cond(state):
        return (state[-1] < steps) & jnp.any(state[3] > tol2)

    def body(state):
        x, binv, f, r2, alpha, i = state
        dx = -alpha[:, None] * jnp.einsum("nij,nj->ni", binv, f)
        ft = grad(x + dx) - y
        rt = merit(ft)
        active = r2 > tol2
        ok = active & (rt < r2)
        df = ft - f
        bdf = jnp.einsum("nij,nj->ni", binv, df)
        den = jnp.sum(dx * bdf, axis=-1)
        good = (
            active
            & (jnp.abs(den) > 1e-12 * jnp.sum(dx * dx, axis=-1))
            & jnp.isfinite(rt)
            & jnp.isfinite(den)
        )
        update = jnp.einsum("ni,nj->nij", dx - bdf, jnp.einsum("ni,nij->nj", dx, binv))
        binv = binv + jnp.where(good, 1.0 / jnp.where(good, den, 1.0), 0.0)[:, None, None] * update
        x = jnp.where(ok[:, None], x + dx, x)
        f = jnp.where(ok[:, None], ft, f)
        r2 = jnp.where(ok, rt, r2)
        alpha = jnp.where(ok, jnp.minimum(2.0 * alpha, 1.0), 0.5 * alpha)
        return x, binv, f, r2, alpha, i + 1

    f0 = grad(x0) - y if f0 is None else f0
    state = (x0, binv0, f0, merit(f0), jnp.ones(y.shape[:1], dtype), 0)
    x, _, _, r2, _, _ = jax.lax.while_loop(cond, body, state)
    return x, r2


def newton_inverse(
    phi, y: jax.Array, starts: jax.Array, iterations: int, *, keep: int = 2, screen: int = 6
) -> jax.Array:
    """Solves ``∇φ(x) = y`` row by row by damped Newton from many starts; the best one wins.

    With more than ``keep`` starts, every start first takes ``screen`` Levenberg-Marquardt steps
    on the residual, and only the ``keep`` best of each row go on to the full solve
    (``iterations`` steps): a non-convex φ has residual minima that are not preimages, and a
    start in the right basin is what finds the preimage, so it pays to try many cheaply. The
    full solve follows two paths from each kept start: half its steps on ψ and the rest on the
    residual, and all of them on the residual (see :func:`_newton_step`).

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
    return _newton_rows(phi, y, starts, iterations, keep=keep, screen=screen)[0]


def _newton_rows(phi, y, starts, iterations, *, keep=2, screen=6):
    """:func:`newton_inverse`, also returning each row's ``‖∇φ(x) − y‖²`` ``[n]``.

    The screening and the full solve are one loop over a fixed set of 2 · min(S, keep) lanes
    per row (the starts go through the screening that many at a time), so the Newton step is
    traced and compiled once, whatever the number of starts.
    """
    starts = starts[None] if starts.ndim == 2 else starts
    count, lanes = starts.shape[0], 2 * min(starts.shape[0], keep)
    groups = -(-count // lanes) if count > keep else 0
    screen_steps = groups * screen
    if groups:  # pad the starts to whole groups of lanes (repeats are harmless)
        pad = jnp.broadcast_to(starts[-1:], (groups * lanes - count, *starts.shape[1:]))
        starts = jnp.concatenate([starts, pad])

    def row(y, starts):  # [k], [S, k]
        merits = functools.partial(_merits, phi, y)
        e_psi, e_res = jax.vmap(merits)(starts)
        step = jax.vmap(functools.partial(_newton_step, phi, y), in_axes=(0, 0, 0, 0))
        # The full solve's lanes: each kept start twice, ψ first on the first half.
        psi_steps = jnp.repeat(jnp.asarray([iterations // 2, 0], jnp.int32), lanes // 2)

        def pick(xs, e_psi, e_res):  # the `keep` (or all) best, each twice
            order = jnp.argsort(e_res)[: lanes // 2]
            order = jnp.concatenate([order, order])
            return xs[order], e_psi[order], e_res[order]

        def body(i, state):
            lane, buffer = state
            if groups:
                group = jnp.minimum(i // screen, groups - 1)
                first = (i < screen_steps) & (i % screen == 0)
                loaded = [jax.lax.dynamic_slice_in_dim(v, group * lanes, lanes) for v in buffer]
                lane = [jnp.where(first, a, b) for a, b in zip(loaded, lane, strict=True)]
                full = pick(*buffer)
                lane = [jnp.where(i == screen_steps, a, b) for a, b in zip(full, lane, strict=True)]
            on_psi = (i >= screen_steps) & (i - screen_steps < psi_steps)
            lane = list(step(*lane, on_psi))
            if groups:
                last = (i < screen_steps) & (i % screen == screen - 1)
                buffer = [
                    jnp.where(last, jax.lax.dynamic_update_slice_in_dim(b, a, group * lanes, 0), b)
                    for a, b in zip(lane, buffer, strict=True)
                ]
            return lane, buffer

        buffer = [starts, e_psi, e_res]
        lane = pick(*buffer) if not groups else [v[:lanes] for v in buffer]
        lane, _ = jax.lax.fori_loop(0, screen_steps + iterations, body, (list(lane), buffer))
        best = jnp.argmin(lane[2])
        return lane[0][best], lane[2][best]

    return jax.vmap(row, in_axes=(0, 1))(y, starts)


def _merits(phi, y, x):
    """``(ψ(x), ‖∇φ(x) − y‖²)`` for one point ``[k]``, +inf where not finite: ψ(x) = φ(x) −
    ⟨x, y⟩ (its minimum is a preimage when φ is convex) and the residual (zero at every
    preimage), both from one ``value_and_grad``."""
    v, g = jax.value_and_grad(phi)(x)
    r = g - y
    psi, res = v - jnp.dot(x, y), jnp.dot(r, r)
    return jnp.where(jnp.isfinite(psi), psi, jnp.inf), jnp.where(jnp.isfinite(res), res, jnp.inf)


def _newton_step(phi, y, x, e_psi, e_res, on_psi):
    """One damped Newton step on ψ (``on_psi``) or on the residual, from ``x`` ``[k]`` with
    merits ``(e_psi, e_res)`` (:func:`_merits`); returns the new point and its merits.

    The step solves the Levenberg-Marquardt system of the residual, or ψ's Newton system with
    the Hessian shifted to positive definite; all of :data:`_STEP_LENGTHS` are tried at once and
    the best trial is kept if it lowers the merit.
    """
    k = y.shape[-1]
    dtype = y.dtype
    grad = jax.grad(phi)
    if k <= DENSE_JACOBIAN_MAX_DIM:
        g, h = jax.vmap(lambda v: jax.jvp(grad, (x,), (v,)), out_axes=(None, 0))(
            jnp.eye(k, dtype=dtype)
        )
        f = g - y
        lam, vec = jnp.linalg.eigh(0.5 * (h + h.T))
        scale = jnp.mean(jnp.abs(lam)) + jnp.finfo(dtype).tiny
        # Levenberg-Marquardt on ‖F‖²: (JᵀJ + μ I) s = Jᵀ F with J = H symmetric. A descent
        # direction of the residual even where H is indefinite, and the Newton step H⁻¹ F
        # (quadratic convergence) where H is well conditioned. On ψ: the modified Newton
        # step, H shifted to positive definite.
        w_res = lam / (lam * lam + (1e-3 * scale) ** 2)
        w_psi = 1.0 / (lam + jnp.maximum(-lam[0], 0.0) + 1e-6 * scale)
        s = vec @ (jnp.where(on_psi, w_psi, w_res) * (vec.T @ f))
    else:
        g, hvp = jax.linearize(grad, x)
        f = g - y
        s, _ = jax.scipy.sparse.linalg.gmres(hvp, f, restart=min(k, 30), maxiter=2)
    s = jnp.where(jnp.all(jnp.isfinite(s)), s, f)
    trials = x[None, :] - jnp.asarray(_STEP_LENGTHS, dtype)[:, None] * s[None, :]
    t_psi, t_res = jax.vmap(functools.partial(_merits, phi, y))(trials)
    es = jnp.where(on_psi, t_psi, t_res)
    best = jnp.argmin(es)
    better = es[best] < jnp.where(on_psi, e_psi, e_res)
    return (
        jnp.where(better, trials[best], x),
        jnp.where(better, t_psi[best], e_psi),
        jnp.where(better, t_res[best], e_res),
    )
