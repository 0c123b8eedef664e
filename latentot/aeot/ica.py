"""FastICA on every code: chunked fixed-point sums in one jitted loop, from a deterministic start.

Symmetric FastICA (Hyvärinen 1999, log-cosh contrast) on whitened data z ``[n, m]``: each step

    W ← polar( E[g(W z) zᵀ] − diag(E[g'(W z)]) W ),   g = tanh,

where ``polar(A) = (A Aᵀ)^{-½} A`` keeps the rows orthonormal. The expectations are sums over
chunks of :data:`ICA_CHUNK` rows (a ``[chunk, m]`` temporary, never ``[n, m]``), so the step
uses every code at any n; with a mesh the rows are sharded over its devices and each device's
sums are added (``psum``). The whole loop runs on the device (``lax.while_loop``).

The start is FOBI's (Cardoso 1989): the eigenvectors of ``E[(‖z‖² − m − 2) z zᵀ]``, whose
eigenvalues are the excess kurtoses of independent components (0 on Gaussian directions),
ordered by their magnitude. It needs no random draw, and where few directions are non-Gaussian
among many Gaussian ones (non-Gaussian component analysis) it starts FastICA inside their span
instead of at overlaps of order 1/√m with it, which FastICA from a random start does not leave
at sample sizes near m².
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

__all__ = ["fast_ica", "fobi_start", "map_rows", "row_sums"]

#: Rows per chunk of the fixed-point sums.
ICA_CHUNK = 16384


def row_sums(f, z: jax.Array, *args, chunk: int = ICA_CHUNK, mesh: Mesh | None = None):
    """``Σ_chunks f(z_chunk, *args)``: a pytree of sums over the rows of ``z`` ``[n, m]``.

    ``f`` must be a sum over its chunk's rows (and accept a chunk of no rows). Traceable.
    With ``mesh``, ``z`` is sharded by rows over all its axes and ``args`` are replicated;
    each device sums its own rows and the results are added across devices.
    """

    def local(z, *args):
        n = z.shape[0]
        size = min(chunk, n)
        full = n // size if size else 0
        acc = f(z[full * size :], *args)  # the remainder (maybe no rows)

        def body(i, acc):
            part = f(lax.dynamic_slice_in_dim(z, i * size, size), *args)
            return jax.tree.map(jnp.add, acc, part)

        return lax.fori_loop(0, full, body, acc) if full else acc

    if mesh is None:
        return local(z, *args)
    axes = tuple(mesh.axis_names)

    def sharded(z, *args):
        return jax.tree.map(lambda s: lax.psum(s, axes), local(z, *args))

    out = jax.eval_shape(local, jax.ShapeDtypeStruct((0, z.shape[1]), z.dtype), *args)
    return jax.shard_map(
        sharded,
        mesh=mesh,
        in_specs=(P(axes), *(P() for _ in args)),
        out_specs=jax.tree.map(lambda _: P(), out),
        check_vma=False,
    )(z, *args)


def map_rows(f, z: jax.Array, *args, chunk: int = ICA_CHUNK, mesh: Mesh | None = None):
    """``f(z, *args)`` for a row-wise ``f`` (``[c, m] → [c, m]``), a chunk of rows at a time,
    written back into z's buffer: with z donated by the caller's ``jit`` the map runs in place
    and its temporaries are a chunk's, never ``[n, m]``. Traceable; ``mesh`` as in
    :func:`row_sums` (each device maps its own rows)."""

    def local(z, *args):
        n = z.shape[0]
        size = min(chunk, n)
        full = n // size if size else 0
        if full * size < n:
            z = z.at[full * size :].set(f(z[full * size :], *args))

        def body(i, z):
            part = f(lax.dynamic_slice_in_dim(z, i * size, size), *args)
            return lax.dynamic_update_slice_in_dim(z, part, i * size, axis=0)

        return lax.fori_loop(0, full, body, z) if full else z

    if mesh is None:
        return local(z, *args)
    axes = tuple(mesh.axis_names)
    return jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(P(axes), *(P() for _ in args)),
        out_specs=P(axes),
        check_vma=False,
    )(z, *args)


def _fobi_sums(z):
    r = jnp.sum(z * z, axis=1) - (z.shape[1] + 2.0)
    return (z * r[:, None]).T @ z


@functools.partial(jax.jit, static_argnames=("chunk", "mesh"))
def _fobi_matrix(z, chunk, mesh):
    return row_sums(_fobi_sums, z, chunk=chunk, mesh=mesh) / z.shape[0]


def fobi_start(z: jax.Array, *, chunk: int = ICA_CHUNK, mesh: Mesh | None = None) -> np.ndarray:
    """FOBI's unmixing directions of whitened ``z`` ``[n, m]``: ``[m, m]`` orthonormal rows,
    the eigenvectors of ``E[(‖z‖² − m − 2) z zᵀ]`` by decreasing |eigenvalue| (float64)."""
    moment = np.asarray(_fobi_matrix(z, chunk, mesh), np.float64)
    lam, v = np.linalg.eigh(0.5 * (moment + moment.T))
    order = np.argsort(-np.abs(lam), kind="stable")
    return v[:, order].T


def _ica_sums(z, w):
    g = jnp.tanh(z @ w.T)
    return g.T @ z, jnp.sum(1.0 - g * g, axis=0)


#: A row has settled when its change ``|1 − |⟨w_new, w⟩||`` is below this (it stays near a
#: fixed point, moved only by the re-orthogonalisation).
ICA_SETTLED = 1e-2

#: A pass that starts from directions already found (the refinement on every code after a
#: first pass on a sample) stops when no further row has settled for this many steps: rows
#: along Gaussian directions never settle (any rotation among them is as good), so waiting for
#: them would spend the whole budget. A first pass gets no such stop: weakly non-Gaussian
#: directions are found while the rows still turn (on the known-map mixture at d = 64, 6
#: significant components after 200 steps against 1 after 20, with no row settled).
ICA_PATIENCE = 20


def _fixed_point(w, z, chunk, mesh):
    """One FastICA step for the rows of w ``[s, m]``, re-orthogonalised (polar factor)."""
    gz, dg = row_sums(_ica_sums, z, w, chunk=chunk, mesh=mesh)
    n = z.shape[0]
    w_new = gz / n - (dg / n)[:, None] * w
    u, _, vt = jnp.linalg.svd(w_new, full_matrices=False)
    w_new = u @ vt  # (W Wᵀ)^{-½} W
    return w_new, jnp.abs(jnp.abs(jnp.sum(w_new * w, axis=1)) - 1.0)


@functools.partial(jax.jit, static_argnames=("chunk", "mesh"))
def _symmetric_pass(w, z, iterations, tol, patience, chunk, mesh):
    """Steps on every row until all have converged (``tol``), ``iterations`` steps, or no
    further row has settled for ``patience`` steps while some have not."""

    def step(state):
        i, w, change, best, last = state
        w, change = _fixed_point(w, z, chunk, mesh)
        count = jnp.sum(change < ICA_SETTLED)
        last = jnp.where(count > best, i + 1, last)
        return i + 1, w, change, jnp.maximum(best, count), last

    def cond(state):
        i, _, change, best, last = state
        stalled = (i - last >= patience) & (best < w.shape[0])
        return (i < iterations) & (jnp.max(change) >= tol) & ~stalled

    init = (0, w, jnp.full(w.shape[0], jnp.inf, w.dtype), 0, 0)
    i, w, change, *_ = lax.while_loop(cond, step, init)
    return w, change, i


@functools.partial(jax.jit, static_argnames=("chunk", "mesh"))
def _subset_pass(w, z, iterations, tol, chunk, mesh):
    """Steps on the rows of w ``[s, m]`` alone (orthogonalised among themselves) until all have
    converged or ``iterations`` steps."""

    def cond(state):
        i, _, change = state
        return (i < iterations) & (change >= tol)

    def step(state):
        i, w, _ = state
        w, change = _fixed_point(w, z, chunk, mesh)
        return i + 1, w, jnp.max(change)

    i, w, _ = lax.while_loop(cond, step, (0, w, jnp.asarray(jnp.inf, w.dtype)))
    return w, i


def _complete(settled: np.ndarray, rest: np.ndarray) -> np.ndarray:
    """``rest`` ``[m − s, m]`` made orthonormal and orthogonal to the orthonormal rows of
    ``settled`` ``[s, m]``, stacked under them: ``[m, m]`` orthogonal."""
    rest = rest - (rest @ settled.T) @ settled
    u, _, vt = np.linalg.svd(rest, full_matrices=False)
    return np.concatenate([settled, u @ vt])


def fast_ica(
    z,
    seed: int = 0,
    iterations: int = 200,
    tol: float = 1e-4,
    *,
    patience: int | None = None,
    start: str | np.ndarray = "fobi",
    chunk: int = ICA_CHUNK,
    mesh: Mesh | None = None,
    return_iterations: bool = False,
):
    """Symmetric FastICA (log-cosh contrast) on whitened data ``z`` ``[n, m]``.

    Args:
      z: ``[n, m]`` whitened rows (host or device; with ``mesh``, a device array sharded by
        rows over all of the mesh's axes).
      seed: seed of the random start (``start="random"``).
      iterations: at most this many steps.
      tol: a row has converged when its ``|1 − |⟨w_new, w⟩||`` is below this; FastICA stops
        when every row has.
      patience: if given (e.g. :data:`ICA_PATIENCE`), the symmetric pass also stops when no
        further row has settled (changed by less than :data:`ICA_SETTLED`) for this many
        steps. Either way, when some rows settled and others did not, the settled rows are
        refined alone (the others, Gaussian directions, are completed to an orthogonal W).
      start: ``"fobi"`` (:func:`fobi_start`), ``"random"`` (a random orthogonal matrix), or an
        ``[m, m]`` matrix with orthonormal rows.
      chunk: rows per chunk of the sums.
      mesh: the mesh ``z`` is sharded over, or None.
      return_iterations: also return the number of steps taken.

    Returns:
      W ``[m, m]`` orthogonal (float64), rows the unmixing directions (the settled ones first
      when some never settled); with
      ``return_iterations``, ``(W, steps)``.
    """
    z = z if isinstance(z, jax.Array) else jnp.asarray(np.asarray(z), jnp.float32)
    if z.ndim != 2:
        raise ValueError(f"z must be [n, m], got shape {z.shape}")
    m = z.shape[1]
    if isinstance(start, str):
        if start == "fobi":
            w0 = fobi_start(z, chunk=chunk, mesh=mesh)
        elif start == "random":
            w0, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((m, m)))
        else:
            raise ValueError(f"start must be 'fobi', 'random' or an [m, m] matrix, got {start!r}")
    else:
        w0 = np.asarray(start, np.float64)
        if w0.shape != (m, m):
            raise ValueError(f"start must be [{m}, {m}], got shape {w0.shape}")
    patience = iterations if patience is None else patience
    w, change, steps = _symmetric_pass(
        jnp.asarray(w0, z.dtype), z, iterations, tol, patience, chunk, mesh
    )
    w, change, steps = np.asarray(w, np.float64), np.asarray(change), int(steps)
    settled = change < ICA_SETTLED
    if settled.any() and not settled.all() and np.max(change[settled]) >= tol:
        # The rows along Gaussian directions kept turning, and the re-orthogonalisation moved
        # the settled ones with them: those are refined alone, orthogonal among themselves.
        ws, more = _subset_pass(jnp.asarray(w[settled], z.dtype), z, iterations, tol, chunk, mesh)
        w = _complete(np.asarray(ws, np.float64), w[~settled])
        steps += int(more)
    return (w, int(steps)) if return_iterations else w
