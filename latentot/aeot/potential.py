"""The AE-OT potential D: R^d → R, a Flax NNX MLP with an optional max-of-heads output.

AE-OT (Liu et al., Eq. 18-19) regresses the noise-side Kantorovich potential H of each batch LP
with a network D and generates codes as ``T(z) = z + ∇D(z)``. The exact batch potential,
``H(x) = max_j (H_j - ½‖x - y_j‖²)``, is a maximum of smooth pieces, and the optimal map from a
connected prior onto separated clusters is discontinuous: ∇D must jump across the cell
boundaries. A plain smooth MLP can only approximate the jump by a ramp, and every noise sample on
the ramp is mapped between the clusters (the "smear" that the eight-Gaussians reproduction
measures). :class:`Potential` therefore ends, by default, in ``heads`` output units combined by a
maximum (``temperature = 0``) or a log-sum-exp of width ``temperature``::

    D(x) = max_k f_k(x),    f = Linear ∘ (act ∘ Linear)^depth (x) ∈ R^heads

Each head can model the potential of one cluster; where two heads cross, ∇D jumps exactly, and an
error δ in the head values only moves the boundary by δ / ‖∇f_k − ∇f_l‖ instead of smearing mass.
With ``heads = 1`` it is the plain MLP of the paper.

Each head also has a linear skip term and starts on its own cone of the input space
(``head_spread``); D is multiplied by ``output_scale`` (the spread of the codes, set by
:func:`~latentot.aeot.fit`) so that the parameters stay O(1).

With ``base = True`` the potential also carries a fixed quadratic, the Bures map of
:mod:`latentot.aeot.bures`::

    D(x) = ½ xᵀ (A − I) x + bᵀ x + max_k f_k(x),    so    T(x) = x + ∇D(x) = A x + b + ∇max_k f_k(x)

``A`` and ``b`` are :class:`Fixed` variables (state, not parameters: the trainer never updates
them); :func:`~latentot.aeot.fit` sets them to the closed-form Gaussian map of the codes, so the
heads only learn the non-Gaussian part of the map. With ``A = I`` and ``b = 0`` (their initial
values) the potential is the plain max-of-heads network.

The optimal map is the gradient of a convex function, ``T = ∇φ`` with ``φ = ½‖x‖² + D``, but a
generic network D does not make φ convex, and the learned map can then decrease along a line.
With ``convex = True`` every head is an input-convex network (non-negative weights after the
first layer, convex nondecreasing units) and each head's quadratic form in φ is kept positive
definite, so φ is convex and ``x ↦ x + ∇D(x)`` monotone for every value of the parameters. The
measurements behind the defaults are in ``benchmarks/README.md``.
"""

from __future__ import annotations

import itertools
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = ["ACTIVATIONS", "CONVEX_ACTIVATIONS", "Fixed", "Potential"]


def _leaky_relu(x):
    return jax.nn.leaky_relu(x, 0.2)


#: Activations by name (names keep the potential's configuration JSON-serialisable).
ACTIVATIONS = {
    "relu": jax.nn.relu,
    "leaky_relu": _leaky_relu,  # slope 0.2, as in the paper's MNIST/CelebA potential
    "softplus": jax.nn.softplus,
    "gelu": jax.nn.gelu,
    "silu": jax.nn.silu,
    "elu": jax.nn.elu,
    "tanh": jnp.tanh,
}

#: The activations allowed with ``convex = True``: convex and nondecreasing, so that a
#: non-negative combination of them composed with a convex function stays convex.
CONVEX_ACTIVATIONS = ("leaky_relu", "relu", "softplus")

#: With ``convex = True`` the eigenvalues μ of each head's quadratic form are replaced by
#: ``softplus(β μ) / β`` with this β: positive, equal to μ to float32 rounding from
#: μ ≈ 0.5 on (the map's slope starts at 1), and never flat, so that a form pushed below 0
#: still receives a gradient.
CONVEX_EIGEN_SHARPNESS = 50.0

#: With ``convex = True`` the output weights ``softplus(√n v) / √n`` (n the fan-in) start at
#: ``√n v = CONVEX_OUTPUT_START``, the same for every head: a small common convex term that
#: does not move the heads' initial cones, at a point where ``v`` still receives a gradient.
CONVEX_OUTPUT_START = -6.0


class Fixed(nnx.Variable):
    """Module state that training leaves unchanged (the Bures base ``A``, ``b``)."""


class Potential(nnx.Module):
    """MLP potential ``D: [..., d] → [...]`` with a max (or log-sum-exp) over ``heads`` outputs.

    Args:
      dim: latent dimension d.
      width: hidden units per layer.
      depth: number of hidden layers (``depth = 0`` gives a max of affine functions).
      activation: a name from :data:`ACTIVATIONS`.
      heads: number of output units combined by the maximum; 1 gives a plain MLP.
      temperature: 0 for a hard maximum, otherwise ``τ · logsumexp(f / τ)`` (in units of D).
      skip: add a linear map of the input to every head (``f = MLP(x) + W_s x``), so the heads
        start as a max of affine functions, the exact form of a batch potential plus ½‖x‖².
      head_spread: with ``skip`` and ``heads > 1``, each head's linear term starts with this norm
        in a random direction and the MLP output starts at 0, so every head initially owns a
        cone of the input space. (With a generic initialisation one or two heads win
        everywhere and the others never receive a gradient: measured on the eight Gaussians,
        2 of 16 heads took 97% of the noise.)
      output_scale: D is ``output_scale ×`` the network output; :func:`~latentot.aeot.fit` sets
        it to the spread of the codes, so the parameters stay O(1) whatever the code scale.
      curvature: give every head a learnable isotropic quadratic ``½ γ_k ‖x‖²`` (γ_k starts at
        0), so that each cell of the maximum can rescale its noise: the map on cell k is
        ``(A + γ_k I) x + …``. On clustered codes the Bures base stretches every cell to the
        codes' overall spread, and γ_k lets a cell shrink back to its cluster's.
      quadratic: add one learnable quadratic ``½ xᵀ (curvature_rate · M) x``, M symmetric
        ``[d, d]`` and starting at 0, shared by all heads: a linear part of the map that the
        training learns (the Bures ``base`` is fixed, from the codes' moments). With it the map
        is ``(I + curvature_rate · M + …) x + …`` on every cell.
      curvature_rate: the quadratic is ``½ (curvature_rate · γ_k) ‖x‖²``: Adam moves a
        parameter by about the learning rate per step, and a cell may need to undo most of the
        base's stretch, so γ_k is given a larger step than the other parameters.
      convex: make ``φ(x) = ½‖x‖² + D(x)`` convex for every value of the parameters, so that
        the map ``x + ∇D(x) = ∇φ(x)`` is monotone (the optimal map is the gradient of a convex
        function). Each head's network is input-convex (Amos et al. 2017): the weights after
        the first layer are ``softplus(√n v) / √n`` of free parameters v (n the fan-in),
        hence non-negative, and the activation must be one of :data:`CONVEX_ACTIVATIONS`. The
        quadratic terms (``curvature``, ``quadratic`` and the ``base``'s ``A``) enter through
        the matrix ``Q_k = A + output_scale · curvature_rate · (sym(M) + γ_k I)`` (``A = I``
        without a base) of head k's ``½ xᵀ Q_k x`` in φ, whose eigenvalues μ are replaced by
        ``softplus(β μ) / β`` (:data:`CONVEX_EIGEN_SHARPNESS`): positive definite, and equal to
        ``Q_k`` wherever ``Q_k`` is clearly positive. φ is then a maximum (or a log-sum-exp)
        of convex heads. The hidden biases after the first layer start centred on a draw of
        N(0, I) points and the output weights start small and equal for all heads
        (:data:`CONVEX_OUTPUT_START`), so the heads start on their cones.
      base: add the fixed quadratic ``½ xᵀ (A − I) x + bᵀ x`` (see the module docstring); ``A``
        starts as the identity and ``b`` as 0, set them with :meth:`set_base`.
      rngs: ``nnx.Rngs`` or an integer seed for the initialisation.
      param_dtype: dtype of the parameters.
    """

    def __init__(
        self,
        dim: int,
        *,
        width: int = 256,
        depth: int = 3,
        activation: str = "relu",
        heads: int = 16,
        temperature: float = 0.0,
        skip: bool = True,
        head_spread: float = 1.0,
        curvature: bool = False,
        curvature_rate: float = 4.0,
        quadratic: bool = False,
        output_scale: float = 1.0,
        base: bool = False,
        convex: bool = False,
        rngs: nnx.Rngs | int = 0,
        param_dtype: Any = jnp.float32,
    ):
        for name, value, low in (("dim", dim, 1), ("width", width, 1), ("depth", depth, 0)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if not isinstance(heads, int) or heads < 1:
            raise ValueError(f"heads must be an integer >= 1, got {heads!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if convex and activation not in CONVEX_ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {list(CONVEX_ACTIVATIONS)} with convex=True (convex "
                f"and nondecreasing), got {activation!r}"
            )
        if not temperature >= 0.0:
            raise ValueError(f"temperature must be >= 0, got {temperature!r}")
        if not (isinstance(output_scale, (int, float)) and output_scale > 0):
            raise ValueError(f"output_scale must be a positive number, got {output_scale!r}")
        if isinstance(rngs, int):
            rngs = nnx.Rngs(rngs)
        self.dim = dim
        self.width = width
        self.depth = depth
        self.activation = activation
        self.heads = heads
        self.temperature = float(temperature)
        self.skip = bool(skip)
        self.head_spread = float(head_spread)
        self.curvature = bool(curvature)
        if not (isinstance(curvature_rate, (int, float)) and curvature_rate > 0):
            raise ValueError(f"curvature_rate must be a positive number, got {curvature_rate!r}")
        self.curvature_rate = float(curvature_rate)
        self.quadratic = bool(quadratic)
        self.output_scale = float(output_scale)
        self.param_dtype = jnp.dtype(param_dtype).name
        self.base = bool(base)
        self.convex = bool(convex)
        if self.base:
            self.base_matrix = Fixed(jnp.eye(dim, dtype=param_dtype))
            self.base_shift = Fixed(jnp.zeros((dim,), param_dtype))
        sizes = [dim] + [width] * depth
        self.hidden = nnx.List(
            [
                nnx.Linear(a, b, rngs=rngs, param_dtype=param_dtype)
                for a, b in itertools.pairwise(sizes)
            ]
        )
        self.out = nnx.Linear(sizes[-1], heads, rngs=rngs, param_dtype=param_dtype)
        self.linear = (
            nnx.Linear(dim, heads, use_bias=False, rngs=rngs, param_dtype=param_dtype)
            if skip
            else None
        )
        self.head_curvature = (
            nnx.Param(jnp.zeros((heads,), param_dtype)) if self.curvature else None
        )
        self.shared_quadratic = (
            nnx.Param(jnp.zeros((dim, dim), param_dtype)) if self.quadratic else None
        )
        if skip and heads > 1:
            u = jax.random.normal(rngs.params(), (dim, heads), param_dtype)
            u = u / jnp.linalg.norm(u, axis=0, keepdims=True)
            self.linear.kernel[...] = jnp.asarray(self.head_spread, param_dtype) * u
            self.out.kernel[...] = jnp.zeros_like(self.out.kernel[...])
        if self.convex:
            self._init_convex(rngs)

    def _init_convex(self, rngs: nnx.Rngs) -> None:
        """Starts the input-convex network (``convex = True``): non-negative weights
        ``|w₀| / √n`` (w₀ the default initialisation, so each unit sums its inputs with weights
        of mean about 0.8 / n: with non-negative weights the inputs do not cancel, and larger
        ones multiply ∇D by about their sum at every layer), hidden units centred on N(0, I)
        inputs, and small output weights shared by all heads."""
        if self.depth == 0:
            return  # the heads are affine (plus the quadratic forms)
        act = ACTIVATIONS[self.activation]
        dtype = self.out.kernel.dtype
        probe = jax.random.normal(rngs.params(), (1024, self.dim), dtype)
        h = act(self.hidden[0](probe))
        for layer in self.hidden[1:]:
            root = jnp.sqrt(jnp.asarray(layer.kernel.shape[0], dtype))
            target = jnp.maximum(jnp.abs(layer.kernel[...]), 1e-6)  # softplus(√n v) = |w₀|
            layer.kernel[...] = (target + jnp.log(-jnp.expm1(-target))) / root
            pre = h @ _positive(layer.kernel[...])
            layer.bias[...] = -jnp.mean(pre, axis=0).astype(dtype)
            h = act(pre + layer.bias[...])
        root = jnp.sqrt(jnp.asarray(self.out.kernel.shape[0], dtype))
        self.out.kernel[...] = jnp.full_like(self.out.kernel[...], CONVEX_OUTPUT_START) / root

    @property
    def config(self) -> dict[str, Any]:
        """The constructor arguments (without ``rngs``), JSON-serialisable. ``convex`` appears
        only when True, so the configurations of other potentials, and the checkpoints that
        store them, are those of the versions without it."""
        return {
            "dim": self.dim,
            "width": self.width,
            "depth": self.depth,
            "activation": self.activation,
            "heads": self.heads,
            "temperature": self.temperature,
            "skip": self.skip,
            "head_spread": self.head_spread,
            "curvature": self.curvature,
            "curvature_rate": self.curvature_rate,
            "quadratic": self.quadratic,
            "output_scale": self.output_scale,
            "base": self.base,
            "param_dtype": self.param_dtype,
        } | ({"convex": True} if self.convex else {})

    def set_base(self, matrix: jax.Array, shift: jax.Array) -> None:
        """Sets the fixed map ``x ↦ A x + b`` of a potential built with ``base = True``.

        Args:
          matrix: ``A`` ``[d, d]``, symmetric (the map must be a gradient).
          shift: ``b`` ``[d]``.
        """
        if not self.base:
            raise ValueError("set_base needs a potential built with base=True")
        dtype = self.base_matrix[...].dtype
        if jnp.shape(matrix) != (self.dim, self.dim) or jnp.shape(shift) != (self.dim,):
            raise ValueError(
                f"matrix must be [{self.dim}, {self.dim}] and shift [{self.dim}], got "
                f"{jnp.shape(matrix)} and {jnp.shape(shift)}"
            )
        self.base_matrix[...] = jnp.asarray(matrix).astype(dtype)
        self.base_shift[...] = jnp.asarray(shift).astype(dtype)

    def head_values(self, x: jax.Array) -> jax.Array:
        """The heads ``f_k(x)`` before the maximum, ``[..., d] → [..., heads]`` (in units of
        ``D / output_scale``, without the base): ``D = output_scale · max_k f_k + base``."""
        if x.shape[-1:] != (self.dim,):
            raise ValueError(f"x must have shape [..., {self.dim}], got {x.shape}")
        if self.convex:
            return self._convex_head_values(x)
        act = ACTIVATIONS[self.activation]
        h = x.astype(self.out.kernel.dtype)
        for layer in self.hidden:
            h = act(layer(h))
        f = self.out(h)
        if self.linear is not None:
            f = f + self.linear(x.astype(f.dtype))
        if self.curvature:
            sq = 0.5 * jnp.sum(x.astype(f.dtype) ** 2, axis=-1, keepdims=True)
            rate = jnp.asarray(self.curvature_rate, f.dtype)
            f = f + sq * (rate * self.head_curvature[...])
        if self.quadratic:
            xs = x.astype(f.dtype)
            m = self.shared_quadratic[...]
            m = 0.5 * (m + m.T) * jnp.asarray(self.curvature_rate, f.dtype)
            mx = jnp.einsum("...i,ij->...j", xs, m, precision=jax.lax.Precision.HIGHEST)
            f = f + 0.5 * jnp.sum(xs * mx, axis=-1, keepdims=True)
        return f

    def _convex_head_values(self, x: jax.Array) -> jax.Array:
        """:meth:`head_values` with ``convex = True``: input-convex networks, a linear skip and
        ``½ xᵀ (Q_k − A) x / output_scale`` with ``Q_k`` positive definite (class docstring)."""
        act = ACTIVATIONS[self.activation]
        h = x.astype(self.out.kernel.dtype)
        for i, layer in enumerate(self.hidden):
            h = act(layer(h) if i == 0 else h @ _positive(layer.kernel[...]) + layer.bias[...])
        kernel = self.out.kernel[...]
        f = (h @ (kernel if self.depth == 0 else _positive(kernel))) + self.out.bias[...]
        if self.linear is not None:
            f = f + self.linear(x.astype(f.dtype))
        if not (self.curvature or self.quadratic or self.base):
            return f  # Q_k = A = I: nothing to project
        # The forms in float32 at least (eigh has no half-precision kernel).
        work = jnp.promote_types(f.dtype, jnp.float32)
        a = self.base_matrix[...].astype(work) if self.base else jnp.eye(self.dim, dtype=work)
        a = 0.5 * (a + a.T)
        scale = jnp.asarray(self.output_scale * self.curvature_rate, work)
        q = a
        if self.quadratic:
            m = self.shared_quadratic[...].astype(work)
            q = q + scale * 0.5 * (m + m.T)
        shifts = (
            scale * self.head_curvature[...].astype(work)
            if self.curvature
            else jnp.zeros((1,), work)
        )
        forms = (_convex_forms(q, shifts) - a) / jnp.asarray(self.output_scale, work)
        xs = x.astype(work)
        qx = jnp.einsum("...i,kij->...kj", xs, forms, precision=jax.lax.Precision.HIGHEST)
        quad = 0.5 * jnp.sum(qx * xs[..., None, :], axis=-1)
        return f + quad.astype(f.dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Evaluates D.

        Args:
          x: points ``[..., d]``.

        Returns:
          ``[...]``, the potential at each point.
        """
        f = self.head_values(x)
        if self.heads == 1:
            d = f[..., 0]
        elif self.temperature == 0.0:
            d = jnp.max(f, axis=-1)
        else:
            t = jnp.asarray(self.temperature, f.dtype)
            d = t * jax.nn.logsumexp(f / t, axis=-1)
        if self.output_scale != 1.0:
            d = jnp.asarray(self.output_scale, d.dtype) * d
        if self.base:
            xs = x.astype(d.dtype)
            a = self.base_matrix[...].astype(d.dtype)
            ax = jnp.einsum("...i,ij->...j", xs, a, precision=jax.lax.Precision.HIGHEST)
            quad = 0.5 * jnp.sum(xs * (ax - xs), axis=-1)
            d = d + quad + xs @ self.base_shift[...].astype(d.dtype)
        return d

    def gradient(self, x: jax.Array) -> jax.Array:
        """∇D at each point: ``[..., d] → [..., d]`` (rows are independent)."""
        return jax.grad(lambda z: jnp.sum(self(z)))(x)


def _positive(v: jax.Array) -> jax.Array:
    """The non-negative weights ``softplus(√n v) / √n`` of a ``[n, m]`` kernel of free
    parameters v (n the fan-in, 1 / √n the scale of the default initialisation): about
    ``max(v, 0)`` above that scale, about ``exp(√n v) / √n`` below it (a step of Adam changes a
    small weight by a fixed fraction), and with a gradient everywhere."""
    root = jnp.sqrt(jnp.asarray(v.shape[0], v.dtype))
    return jax.nn.softplus(root * v) / root


def _soft_positive(mu: jax.Array) -> jax.Array:
    b = jnp.asarray(CONVEX_EIGEN_SHARPNESS, mu.dtype)
    return jax.nn.softplus(b * mu) / b


@jax.custom_jvp
def _convex_forms(q: jax.Array, shifts: jax.Array) -> jax.Array:
    """``[h, d, d]``: the matrices ``g(q + s_k I)`` for a symmetric ``q`` ``[d, d]`` and shifts
    ``s`` ``[h]``, with g(μ) = softplus(β μ) / β applied to the eigenvalues."""
    lam, v = jnp.linalg.eigh(q)
    return _spectral(v, _soft_positive(lam + shifts[:, None]))


def _spectral(v: jax.Array, w: jax.Array) -> jax.Array:
    """``[h, d, d]``: ``V diag(w_k) Vᵀ`` for each row ``w_k`` of ``w`` ``[h, d]``."""
    return jnp.einsum("ij,kj,lj->kil", v, w, v, precision=jax.lax.Precision.HIGHEST)


@_convex_forms.defjvp
def _convex_forms_jvp(primals, tangents):
    """The Daleckii-Krein derivative ``V (G ∘ Vᵀ dQ V) Vᵀ`` with G the divided differences of g
    on the eigenvalues (g' where two eigenvalues meet, e.g. at ``q = I``, where the eigenvectors
    themselves have no derivative and eigh's own rule divides by zero)."""
    q, shifts = primals
    dq, dshifts = tangents
    lam, v = jnp.linalg.eigh(q)
    mu = lam + shifts[:, None]  # [h, d]
    g = _soft_positive(mu)
    gap = lam[:, None] - lam[None, :]
    close = jnp.abs(gap) <= 1e-4 * (1.0 + jnp.max(jnp.abs(lam)))
    mid = 0.5 * (mu[:, :, None] + mu[:, None, :])
    slope = jax.nn.sigmoid(jnp.asarray(CONVEX_EIGEN_SHARPNESS, mu.dtype) * mid)
    divided = (g[:, :, None] - g[:, None, :]) / jnp.where(close, 1.0, gap)
    weights = jnp.where(close, slope, divided)  # [h, d, d]
    hp = jax.lax.Precision.HIGHEST
    rotated = jnp.einsum("ji,jk,kl->il", v, 0.5 * (dq + dq.T), v, precision=hp)
    rotated = rotated + dshifts[:, None, None] * jnp.eye(q.shape[0], dtype=q.dtype)
    dforms = jnp.einsum("ij,kjl,ml->kim", v, weights * rotated, v, precision=hp)
    return _spectral(v, g), dforms
