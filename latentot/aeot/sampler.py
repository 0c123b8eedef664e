"""The trained AE-OT sampler: ``z ↦ T(z)`` with ``z`` drawn from the prior, T = ``z + ∇D(z)``
(Eq. 19), or a pursuit frame around it."""

from __future__ import annotations

import collections
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from latentot import _checks
from latentot._promotion import cast_back, compute_dtype
from latentot.aeot.inverse import ROBUST_CHUNK, InverseInfo, solve_inverse
from latentot.aeot.potential import Potential

__all__ = ["Sampler"]


@jax.tree_util.register_pytree_node_class
class Sampler:
    """A trained potential D together with its prior.

    The sampler is a pytree (the potential's state and the prior are leaves, the network
    structure is static), so it can be passed through ``jax.jit``; its methods are traceable.

    Args:
      params: the potential's state (``nnx.State`` of all its variables: parameters and fixed
        buffers such as the Bures base).
      prior: the noise prior (see :mod:`latentot.priors`).
      potential_config: :attr:`Potential.config` of the network, or ``None`` for a user module
        (which then needs ``graphdef``, and cannot be saved with :func:`~latentot.aeot.save`).
      history: training history (a dict of NumPy arrays indexed by step), or ``None``. It is not
        part of the pytree and is dropped by ``jax.tree_util`` round trips.
      graphdef: the module's ``nnx.GraphDef``; by default rebuilt from ``potential_config``.
      dim: the latent dimension d; by default ``potential_config["dim"]`` or the module's
        ``dim`` attribute (needed by :meth:`sample` for a user module without either).
      frame: a :class:`~latentot.aeot.pursuit.Frame` (``method="pursuit"``): the potential
        then maps the frame's k-dimensional block and the frame maps the rest, ``T(z) =
        frame.transport(z, z_V ↦ z_V + ∇D(z_V))``; with ``k = 0`` there is no potential
        (``params`` and ``potential_config`` are ``None``). ``fit``'s debiased method returns
        a frame with k = d when its samples need the moment correction
        (:func:`~latentot.aeot.pursuit.moment_correction`, the frame's ``block``).
      bounds: ``(low, high)`` ``[d]`` arrays (``fit(bounds=...)``): the map above is then
        followed by ``y ↦ low + (high − low) · sigmoid(y)``, so every sample lies in the box.
    """

    def __init__(
        self,
        params: nnx.State,
        prior: Any,
        potential_config: dict | None,
        history=None,
        *,
        graphdef=None,
        dim: int | None = None,
        frame=None,
        bounds=None,
    ):
        self.params = params
        self.prior = prior
        self.potential_config = None if potential_config is None else dict(potential_config)
        self.history = history
        self.frame = frame
        self.bounds = None if bounds is None else tuple(bounds)
        if frame is not None and frame.k == 0:
            graphdef = None
        elif graphdef is None:
            if potential_config is None:
                raise ValueError("Sampler needs potential_config or graphdef")
            graphdef = nnx.graphdef(nnx.eval_shape(lambda: Potential(**potential_config)))
        self.graphdef = graphdef
        self._dim = None if dim is None else int(dim)

    @classmethod
    def from_potential(
        cls, potential: nnx.Module, prior: Any, history=None, *, dim: int | None = None
    ) -> Sampler:
        """A sampler from an NNX potential module (its current state) and a prior."""
        graphdef, state = nnx.split(potential)
        config = getattr(potential, "config", None)
        return cls(state, prior, config, history, graphdef=graphdef, dim=dim)

    # -- pytree ---------------------------------------------------------------------------------
    def tree_flatten(self):
        config = None if self.potential_config is None else tuple(self.potential_config.items())
        children = (self.params, self.prior, self.frame, self.bounds)
        return children, (self.graphdef, config, self._dim)

    @classmethod
    def tree_unflatten(cls, aux, children):
        graphdef, config, dim = aux
        params, prior, frame, bounds = children
        config = None if config is None else dict(config)
        return cls(params, prior, config, graphdef=graphdef, dim=dim, frame=frame, bounds=bounds)

    # -- evaluation -----------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        """Latent dimension d."""
        if self._dim is not None:
            return self._dim
        if self.frame is not None:
            return self.frame.dim
        if self.potential_config is not None:
            return int(self.potential_config["dim"])
        return int(self.model.dim)

    @property
    def model(self) -> nnx.Module:
        """The potential as an NNX module (a fresh object sharing this state)."""
        return nnx.merge(self.graphdef, self.params)

    @property
    def k(self) -> int:
        """The dimension of the learned block: d, or the frame's k (``method="pursuit"``)."""
        return self.dim if self.frame is None else self.frame.k

    def potential(self, z: jax.Array) -> jax.Array:
        """D(z): ``[..., k] → [...]`` (``k = d`` unless the sampler has a frame)."""
        return self.model(jnp.asarray(z))

    def transport(self, z: jax.Array) -> jax.Array:
        """Maps given noise to codes, ``[..., d] → [..., d]``: ``z + ∇D(z)``, or with a frame
        (``method="pursuit"``) the frame's linear and one-dimensional layers around the learned
        block; with ``bounds`` then the logistic map into the box.

        Jittable and vmappable (a single point ``[d]`` is accepted).
        """
        return _transport_jit(self, jnp.asarray(z))

    def inverse_transport(
        self,
        codes: jax.Array,
        *,
        return_info: bool = False,
        iterations: int = 30,
        rtol: float = 1e-2,
    ) -> jax.Array | tuple[jax.Array, InverseInfo]:
        """Maps codes back to noise, ``T⁻¹``: ``[..., d] → [..., d]`` (a single code ``[d]`` too).

        The frame's linear and layer parts are inverted exactly; the learned map ``x + ∇D(x)``
        (the whole map without a frame) by quasi-Newton from the inverse of its Bures base and
        from the prior draws (anchors) whose images lie nearest, each code stopping once
        converged, and the codes left over by the many-start damped Newton of ``iterations``
        steps (see :mod:`latentot.aeot.inverse`). The anchors' images are computed once per
        sampler state and kept on the host; a sampler passed to ``jax.jit`` as an argument is
        traced, and its program then computes them in every call (close over the sampler to
        keep them). Called outside ``jax.jit``, the many-start pass is compiled and run only
        when some codes need it. Jittable and vmappable; the result is finite for finite codes.

        The potential need not be convex, so a code may have no exact preimage (between the
        map's clusters, or far outside the codes): the result is then the point of smallest
        residual found, and it is flagged. Nothing raises inside ``jax.jit``; ask for
        ``return_info=True`` and check ``info.converged``, or call ``info.check()`` on the host.

        Args:
          codes: ``[..., d]`` latent codes.
          return_info: also return an :class:`~latentot.aeot.inverse.InverseInfo` (per-code
            residual ``‖T(x) − y‖ / √d``, ``converged`` mask, tolerance).
          iterations: steps of the many-start damped Newton (static int >= 0); 0 returns the
            better start of each code without a solve.
          rtol: a code converged when its residual is at most ``rtol`` times the codes'
            root-mean-square standard deviation; both in the codes' units (for a sampler with
            ``bounds``, in the box: the spread of the sampler's own samples there).

        Returns:
          Noise ``[..., d]``, or ``(noise, info)`` with ``return_info``.

        Raises:
          ValueError: codes of another last dimension than d, of rank 0, or not real; a
            negative ``iterations`` or ``rtol``.
        """
        y = _checks.latent("codes", codes)
        if y.shape[-1] != self.dim:
            raise ValueError(f"codes must have shape [..., {self.dim}], got {y.shape}")
        iterations = _checks.check_positive_int("iterations", iterations, minimum=0)
        rtol = float(rtol)
        if not 0.0 <= rtol < float("inf"):
            raise ValueError(f"rtol must be a finite number >= 0, got {rtol!r}")
        dtype = y.dtype
        inner = compute_dtype(dtype)
        y = y.astype(inner)
        table = _cached_table(self, jnp.dtype(inner))
        if table is None or isinstance(y, jax.core.Tracer):  # one program, all passes
            x, info = _inverse_jit(self, y, table, iterations, rtol, passes="all")
        else:
            x, info = _inverse_host(self, y, table, iterations, rtol)
        x = cast_back(x, dtype)
        return (x, info) if return_info else x

    def sample(self, rng: jax.Array, n: int, dtype: Any = None) -> jax.Array:
        """Draws ``n`` codes ``[n, d]``: :meth:`transport` of ``z ~ prior``.

        Jittable with ``n`` static. ``dtype`` defaults to the potential's parameter dtype.
        """
        if dtype is None:
            leaves = jax.tree_util.tree_leaves((self.params, self.frame))
            dtype = leaves[0].dtype if leaves else jnp.result_type(float)
        return _sample_jit(self, rng, n, jnp.dtype(dtype))

    def __repr__(self) -> str:
        frame = "" if self.frame is None else f", k={self.frame.k} of d={self.frame.dim}"
        return f"Sampler(prior={self.prior!r}, potential={self.potential_config!r}{frame})"


def _map(sampler: Sampler, z: jax.Array) -> jax.Array:
    if sampler.frame is None:
        y = transport(sampler.model, z)
    else:
        inner = None if sampler.frame.k == 0 else functools.partial(transport, sampler.model)
        y = sampler.frame.transport(z, inner)
    if sampler.bounds is None:
        return y
    low, high = (b.astype(y.dtype) for b in sampler.bounds)
    return low + (high - low) * jax.nn.sigmoid(y)


def transport(model: nnx.Module, z: jax.Array) -> jax.Array:
    """``z + ∇D(z)`` for a potential module ``D: [..., d] → [...]`` (rows independent)."""
    g = jax.grad(lambda v: jnp.sum(model(v)))(z)
    return z + g.astype(z.dtype)


# Jitted once per sampler structure and shape: eager evaluation of the gradient dispatches and
# compiles every primitive separately, about 2 s per new shape on a CPU. Inside a user's jit these
# calls are inlined.
@jax.jit
def _transport_jit(sampler: Sampler, z: jax.Array) -> jax.Array:
    return _map(sampler, z)


@functools.partial(jax.jit, static_argnames=("n", "dtype"))
def _sample_jit(sampler: Sampler, rng: jax.Array, n: int, dtype) -> jax.Array:
    z = sampler.prior.sample(rng, (n, sampler.dim), dtype)
    return _map(sampler, z)


def _inverse_host(sampler: Sampler, y, table, iterations: int, rtol: float):
    """The inverse called on the host: the rows padded to a bucket size (one compilation
    serves many batch sizes), and the many-start pass compiled and run only for the rows that
    need it (:func:`_resolve`)."""
    flat = y.reshape(-1, sampler.dim)
    n = flat.shape[0]
    size = _bucket(n)
    pad = jnp.zeros((size - n, flat.shape[1]), flat.dtype) if n == 0 else flat[:1]
    padded = jnp.concatenate([flat, jnp.broadcast_to(pad, (size - n, flat.shape[1]))])
    x, info = _inverse_jit(sampler, padded, table, iterations, rtol, passes="fast")
    x, residual = x[:n], info.residual[:n]
    info = InverseInfo(residual=residual, converged=info.converged[:n], tolerance=info.tolerance)
    if iterations and not bool(jnp.all(info.converged)):
        x, info = _resolve(sampler, flat, x, info, table, iterations, rtol)
    shape = y.shape[:-1]
    info = InverseInfo(
        residual=info.residual.reshape(shape),
        converged=info.converged.reshape(shape),
        tolerance=info.tolerance,
    )
    return x.reshape(y.shape), info


def _bucket(n: int) -> int:
    """The smallest 2ᵏ or 3 · 2ᵏ⁻¹ that is at least ``n`` (and at least 8)."""
    size = 8
    while size < n:
        size = size * 3 // 2 if size & (size - 1) == 0 else size * 4 // 3
    return size


def _resolve(sampler: Sampler, y, x, info, table, iterations: int, rtol: float):
    """Solves the unconverged rows of ``y`` ``[n, d]`` again by the many-start damped Newton, in
    chunks of :data:`~latentot.aeot.inverse.ROBUST_CHUNK` rows (one compiled program serves any
    number of rows: it is the largest one), and keeps each row's better point."""
    d = sampler.dim
    flat_y = y.reshape(-1, d)
    flat_x, residual = np.array(x).reshape(-1, d), np.array(info.residual).reshape(-1)
    bad = np.flatnonzero(~np.asarray(info.converged).reshape(-1))
    size = -(-bad.size // ROBUST_CHUNK) * ROBUST_CHUNK
    rows = np.concatenate([bad, np.full(size - bad.size, bad[0])])
    for chunk in np.split(rows, size // ROBUST_CHUNK):  # merged on the host: no new shapes
        x2, info2 = _inverse_jit(sampler, flat_y[chunk], table, iterations, rtol, passes="robust")
        x2, residual2 = np.asarray(x2), np.asarray(info2.residual)
        better = residual2 < residual[chunk]  # a repeated row is the same row solved again
        flat_x[chunk[better]] = x2[better]
        residual[chunk[better]] = residual2[better]
    residual = jnp.asarray(residual).reshape(info.residual.shape)
    info = InverseInfo(
        residual=residual,
        converged=residual <= info.tolerance,
        tolerance=info.tolerance,
    )
    return jnp.asarray(flat_x).reshape(x.shape), info


@functools.partial(jax.jit, static_argnames=("iterations", "rtol", "passes"))
def _inverse_jit(sampler: Sampler, y: jax.Array, table, iterations: int, rtol: float, passes: str):
    d = sampler.dim
    flat = y.reshape(-1, d)
    if table is None:  # a traced sampler (inside a user's jit): no host cache
        table = _anchor_table(sampler, flat.dtype)
    anchors, images, scale = table
    # The learned map's rows stop at a tenth of the reported tolerance (in its own units), so
    # that the frame's and the box's maps after it keep them within the tolerance.
    inner_tol = 0.1 * rtol * _inner_scale(sampler)
    inner = flat
    if sampler.bounds is not None:  # the logits that the map before the box produced
        low, high = (b.astype(flat.dtype) for b in sampler.bounds)
        u = jnp.clip((flat - low) / (high - low), 1e-6, 1.0 - 1e-6)
        inner = jnp.log(u) - jnp.log1p(-u)
    frame = sampler.frame
    if frame is None:
        x = _invert_learned(sampler, inner, anchors, images, iterations, inner_tol, passes)
    else:
        q = frame.basis.astype(flat.dtype)
        a = (inner - frame.mean.astype(flat.dtype)) @ q
        parts = [frame.complement_inverse(a[:, frame.k :])]
        if frame.k:
            v = a[:, : frame.k]
            v = v if frame.block is None else frame.block.forward(v, inverse=True)
            parts.insert(
                0, _invert_learned(sampler, v, anchors, images, iterations, inner_tol, passes)
            )
        x = jnp.concatenate(parts, axis=-1) @ q.T
    residual = jnp.sqrt(jnp.mean((_map(sampler, x) - flat) ** 2, axis=-1))
    tolerance = jnp.asarray(rtol, flat.dtype) * scale.astype(flat.dtype)
    info = InverseInfo(
        residual=residual.reshape(y.shape[:-1]),
        converged=(residual <= tolerance).reshape(y.shape[:-1]),
        tolerance=tolerance,
    )
    return x.reshape(y.shape), info


#: Anchor noise points of the inverse's starts (their images are matched to the codes).
INVERSE_ANCHORS = 4096

#: The inverse's last pass starts from the anchors whose images lie nearest to each code, this
#: many, and from the inverse Bures map (see :func:`~latentot.aeot.inverse.solve_inverse`).
INVERSE_STARTS = 16

#: Samplers whose anchor tables are kept (:func:`_cached_table`), the most recently used.
_TABLE_CACHE_SIZE = 8
_TABLE_CACHE: collections.OrderedDict = collections.OrderedDict()


def _anchor_table(sampler: Sampler, dtype) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(anchors [N, k], their images x + ∇D(x) [N, k], scale [])``: fixed prior draws of the
    learned block, and the scale of the residual that :class:`InverseInfo` reports (the codes'
    root-mean-square standard deviation; for a boxed sampler that of its own samples in the
    box, the units of its residual)."""
    k = sampler.k
    anchors = sampler.prior.sample(jax.random.key(0), (INVERSE_ANCHORS, k), dtype)
    images = transport(sampler.model, anchors) if k else anchors
    if sampler.bounds is None:
        scale = _code_scale(sampler).astype(dtype)
    else:
        z = sampler.prior.sample(jax.random.key(1), (INVERSE_ANCHORS, sampler.dim), dtype)
        scale = jnp.sqrt(jnp.mean(jnp.var(_map(sampler, z), axis=0)))
    return anchors, images, scale


_anchor_table_jit = jax.jit(_anchor_table, static_argnames="dtype")


def _cached_table(sampler: Sampler, dtype):
    """The sampler's :func:`_anchor_table`, computed once per sampler state and dtype (the
    state's arrays are immutable, so the identity of its leaves is the key); ``None`` for a
    traced sampler, whose table is then computed inside the caller's program."""
    leaves, treedef = jax.tree_util.tree_flatten(sampler)
    if any(isinstance(leaf, jax.core.Tracer) for leaf in leaves):
        return None
    key = (treedef, tuple(id(leaf) for leaf in leaves), dtype.name)
    hit = _TABLE_CACHE.get(key)
    if hit is not None:
        _TABLE_CACHE.move_to_end(key)
        return hit[1]
    table = _anchor_table_jit(sampler, dtype=dtype)
    _TABLE_CACHE[key] = (leaves, table)  # holding the leaves keeps their ids unique
    while len(_TABLE_CACHE) > _TABLE_CACHE_SIZE:
        _TABLE_CACHE.popitem(last=False)
    return table


def _invert_learned(sampler: Sampler, y, anchors, images, iterations: int, tolerance, passes):
    """Solves ``x + ∇D(x) = y`` for rows ``[n, k]`` (:func:`~latentot.aeot.inverse.solve_inverse`)
    from the inverse Bures map and the :data:`INVERSE_STARTS` anchors whose images lie nearest
    to each code."""
    model = sampler.model
    x0 = y
    base = None
    if getattr(model, "base", False):
        a = model.base_matrix[...].astype(y.dtype)
        b = model.base_shift[...].astype(y.dtype)
        base = jnp.linalg.inv(a)
        base = jnp.where(jnp.all(jnp.isfinite(base)), base, jnp.eye(a.shape[0], dtype=a.dtype))
        x0 = (y - b) @ base.T
        x0 = jnp.where(jnp.isfinite(x0), x0, y)
    dist = (
        jnp.sum(y * y, axis=-1, keepdims=True)
        - 2.0 * y @ images.T
        + jnp.sum(images * images, axis=-1)[None, :]
    )
    _, nearest = jax.lax.top_k(-dist, INVERSE_STARTS)  # [n, S], nearest first
    starts = jnp.concatenate([x0[None], jnp.moveaxis(anchors[nearest], 1, 0)])  # [S + 1, n, k]

    def phi(v):  # the map x + ∇D(x) is ∇φ
        return 0.5 * jnp.sum(v * v) + model(v).astype(v.dtype)

    return solve_inverse(
        phi,
        y,
        starts,
        tolerance=tolerance,
        iterations=iterations,
        jacobian_inverse=base,
        passes=passes,
    )


def _inner_scale(sampler: Sampler) -> float:
    """The learned map's codes' root-mean-square standard deviation (1 if unknown), static."""
    config = sampler.potential_config or {}
    return float(config.get("output_scale", 1.0))


def _code_scale(sampler: Sampler) -> jax.Array:
    """The codes' root-mean-square standard deviation, from the sampler (1 if unknown)."""
    config = sampler.potential_config or {}
    inner = jnp.asarray(config.get("output_scale", 1.0), jnp.float32)
    if sampler.frame is None:
        return inner
    frame = sampler.frame
    total = jnp.sum(frame.scale.astype(jnp.float32) ** 2) + frame.k * inner**2
    return jnp.sqrt(total / frame.dim)


def init_params(config: dict, seed: int | jax.Array) -> nnx.State:
    """Initial state (all variables) of a :class:`Potential` with the given configuration."""
    return nnx.state(Potential(**config, rngs=nnx.Rngs(seed)))
