"""The trained AE-OT sampler: ``z ↦ T(z)`` with ``z`` drawn from the prior, T = ``z + ∇D(z)``
(Eq. 19), or a pursuit frame around it."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from latentot import _checks
from latentot._promotion import cast_back, compute_dtype
from latentot.aeot.inverse import InverseInfo, newton_inverse
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
        (the whole map without a frame) by damped Newton from the inverse of its Bures base and
        from the prior draws whose images lie nearest, ``iterations`` steps (see
        :mod:`latentot.aeot.inverse`). Jittable and vmappable; the
        result is finite for finite codes.

        The potential need not be convex, so a code may have no exact preimage (between the
        map's clusters, or far outside the codes): the result is then the point of smallest
        residual found, and it is flagged. Nothing raises inside ``jax.jit``; ask for
        ``return_info=True`` and check ``info.converged``, or call ``info.check()`` on the host.

        Args:
          codes: ``[..., d]`` latent codes.
          return_info: also return an :class:`~latentot.aeot.inverse.InverseInfo` (per-code
            residual ``‖T(x) − y‖ / √d``, ``converged`` mask, tolerance).
          iterations: Newton steps (static int >= 0).
          rtol: a code converged when its residual is at most ``rtol`` times the codes'
            root-mean-square standard deviation.

        Returns:
          Noise ``[..., d]``, or ``(noise, info)`` with ``return_info``.

        Raises:
          ValueError: codes of another last dimension than d, of rank 0, or not real.
        """
        y = _checks.latent("codes", codes)
        if y.shape[-1] != self.dim:
            raise ValueError(f"codes must have shape [..., {self.dim}], got {y.shape}")
        iterations = _checks.check_positive_int("iterations", iterations, minimum=0)
        dtype = y.dtype
        x, info = _inverse_jit(self, y.astype(compute_dtype(dtype)), iterations, float(rtol))
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


@functools.partial(jax.jit, static_argnames=("iterations", "rtol"))
def _inverse_jit(sampler: Sampler, y: jax.Array, iterations: int, rtol: float):
    d = sampler.dim
    flat = y.reshape(-1, d)
    inner = flat
    if sampler.bounds is not None:  # the logits that the map before the box produced
        low, high = (b.astype(flat.dtype) for b in sampler.bounds)
        u = jnp.clip((flat - low) / (high - low), 1e-6, 1.0 - 1e-6)
        inner = jnp.log(u) - jnp.log1p(-u)
    frame = sampler.frame
    if frame is None:
        x = _invert_learned(sampler, inner, iterations)
    else:
        q = frame.basis.astype(flat.dtype)
        a = (inner - frame.mean.astype(flat.dtype)) @ q
        parts = [frame.complement_inverse(a[:, frame.k :])]
        if frame.k:
            v = a[:, : frame.k]
            v = v if frame.block is None else frame.block.forward(v, inverse=True)
            parts.insert(0, _invert_learned(sampler, v, iterations))
        x = jnp.concatenate(parts, axis=-1) @ q.T
    residual = jnp.sqrt(jnp.mean((_map(sampler, x) - flat) ** 2, axis=-1))
    tolerance = jnp.asarray(rtol, flat.dtype) * _code_scale(sampler).astype(flat.dtype)
    info = InverseInfo(
        residual=residual.reshape(y.shape[:-1]),
        converged=(residual <= tolerance).reshape(y.shape[:-1]),
        tolerance=tolerance,
    )
    return x.reshape(y.shape), info


#: Anchor noise points of the inverse's starts (their images are matched to the codes).
INVERSE_ANCHORS = 4096

#: The inverse starts from the anchors whose images lie nearest to each code, this many, and
#: from the inverse Bures map; a short screening keeps the best two (see
#: :func:`~latentot.aeot.inverse.newton_inverse`).
INVERSE_STARTS = 16


def _invert_learned(sampler: Sampler, y: jax.Array, iterations: int) -> jax.Array:
    """Solves ``x + ∇D(x) = y`` for rows ``[n, k]``, from the inverse Bures map and the
    :data:`INVERSE_STARTS` anchors (fixed prior draws) whose images lie nearest to each code."""
    model = sampler.model
    k = y.shape[-1]
    x0 = y
    if getattr(model, "base", False):
        a = model.base_matrix[...].astype(y.dtype)
        b = model.base_shift[...].astype(y.dtype)
        x0 = jnp.linalg.solve(a, (y - b).T).T
        x0 = jnp.where(jnp.isfinite(x0), x0, y)
    anchors = sampler.prior.sample(jax.random.key(0), (INVERSE_ANCHORS, k), y.dtype)
    images = transport(model, anchors)
    dist = (
        jnp.sum(y * y, axis=-1, keepdims=True)
        - 2.0 * y @ images.T
        + jnp.sum(images * images, axis=-1)[None, :]
    )
    _, nearest = jax.lax.top_k(-dist, INVERSE_STARTS)  # [n, S]
    starts = jnp.concatenate([x0[None], jnp.moveaxis(anchors[nearest], 1, 0)])  # [S + 1, n, k]

    def phi(v):  # the map x + ∇D(x) is ∇φ
        return 0.5 * jnp.sum(v * v) + model(v).astype(v.dtype)

    return newton_inverse(phi, y, starts, iterations)


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
