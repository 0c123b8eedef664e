"""Monotone transport maps T = F_Z⁻¹ ∘ F_Y for Y = Σ_k w_k Z_k (Agustsson et al., Theorem 2).

``transport_map(prior, weights)`` returns a :class:`TransportMap`, a pytree that applies T
component-wise. Location-scale priors are standardised first, Y = loc·Σw + scale·Y₀, so

    T(y) = loc + scale · T₀((y - loc·Σw) / scale),

with T₀ the map of the standard prior. T₀ comes from a closed form where one exists:

* stable priors (Gaussian: p = 2, Cauchy: p = 1): Y₀ ~ ‖w‖_p · Z₀, so T₀(x) = x / ‖w‖_p;
* Uniform(-1, 1) with two weights: the trapezoid CDF of |w₁|V₁ + |w₂|V₂ (see
  :class:`UniformPairMap`);

and otherwise numerically: by default from :func:`latentot.convolution.fft_table` (the law of
Y by FFT convolution on a lattice, :class:`LatticeMap`), or, on request, from the slower
quantile quadrature of :class:`TabulatedMap`. Both need nothing but the prior's ``cdf``/``icdf``
(and ``sf``/``isf`` for accurate upper tails), so they serve any user prior.

Weights may carry batch axes, ``[..., k]``: one map per weight vector (e.g. one per t of an
interpolation grid). The batch axes broadcast against the leading axes of ``y``.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import threading
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from latentot import _checks, convolution, quadrature
from latentot import priors as _priors
from latentot._promotion import compute_dtype, half_in_float32
from latentot.priors import quantile_map

__all__ = [
    "LatticeMap",
    "StableMap",
    "TabulatedMap",
    "TransportMap",
    "UniformPairMap",
    "family_transport_map",
    "quantile_map",
    "transport_map",
]


def _dataclass(cls=None, /, *, meta=()):
    def wrap(cls):
        cls = dataclasses.dataclass(frozen=True)(cls)
        data = [f.name for f in dataclasses.fields(cls) if f.name not in meta]
        return jax.tree_util.register_dataclass(cls, data_fields=data, meta_fields=list(meta))

    return wrap if cls is None else wrap(cls)


# --------------------------------------------------------------------------------------------
# Standard maps T₀. Each has batch shape B (of its weights) and maps x of shape [*L, d].


@_dataclass
class StableMap:
    """T₀(x) = x / ‖w‖_p for a strictly stable prior of index p (Gaussian 2, Cauchy 1)."""

    norm: jax.Array  # [*B]

    def __call__(self, x):
        return x / self.norm[..., None]


@_dataclass
class UniformPairMap:
    """T₀ for Uniform(-1, 1) and two weights: the closed form of Agustsson et al.

    With s = |w₁| + |w₂|, a = max|w|/s and b = min|w|/s, x' = x/s has the trapezoid CDF

        F(x') = (x'+1)² / (8ab)        for -1 ≤ x' ≤ b - a
              = (x'+a) / (2a)          for b - a ≤ x' ≤ a - b
              = 1 - (1-x')² / (8ab)    for a - b ≤ x' ≤ 1

    and F_Z⁻¹(p) = 2p - 1. Signs do not matter (V and -V have the same law); b = 0 is the
    identity.
    """

    s: jax.Array  # [*B]
    a: jax.Array  # [*B]
    b: jax.Array  # [*B]

    def __call__(self, x):
        s, a, b = (v[..., None] for v in (self.s, self.a, self.b))
        xs = jnp.clip(x / s, -1, 1)
        ab4 = 4 * a * b
        safe = jnp.where(ab4 > 0, ab4, 1)
        low = (xs + 1) ** 2 / safe - 1
        high = 1 - (1 - xs) ** 2 / safe
        mid = xs / a
        out = jnp.where(xs < b - a, low, jnp.where(xs > a - b, high, mid))
        return jnp.clip(out, -1, 1)


@_dataclass(meta=("vmax",))
class TabulatedMap:
    """A numerical monotone map, piecewise linear on a grid that resolves both tails.

    The grid is uniform in v = (y - m) / (|y - m| + c) ∈ (-1, 1), i.e. y = m + c v / (1 - |v|):
    spacing about 2c/N in the body, growing quadratically outwards, out to about c·N/4. Locating
    a point is O(1) (no search). Beyond the grid the end segments extrapolate linearly, which is
    the asymptotic shape of T for the priors here. Each segment stores T = A + B·y.
    """

    m: jax.Array  # [*B] grid centre
    c: jax.Array  # [*B] grid scale
    A: jax.Array  # [*B, N - 1] intercepts
    B: jax.Array  # [*B, N - 1] slopes
    vmax: float

    def __call__(self, x):
        nseg = self.A.shape[-1]
        batch = self.m.shape
        m, c = self.m[..., None], self.c[..., None]
        dx = x - m
        v = dx / (jnp.abs(dx) + c)
        pos = (v + self.vmax) * (nseg / (2 * self.vmax))
        i = jnp.clip(jnp.floor(pos), 0, nseg - 1).astype(jnp.int32)
        return _lookup(self.A, self.B, batch, i, x)


@_dataclass
class LatticeMap:
    """A numerical monotone map, piecewise linear between the points y0 + j h, j = 0 … N - 1.

    Built by :func:`latentot.convolution.fft_table`. Locating a point is O(1); beyond the ends
    the end segments extrapolate linearly. Each segment stores T = A + B·y.

    Without ``rows`` every batch entry has its own table, ``A``/``B`` ``[*B, N - 1]``. With
    ``rows`` ``[*B]`` (int32) the batch entries share the tables ``A``/``B`` ``[R, N - 1]``:
    entry b reads table ``rows[b]`` (the maps of a grid or a looping path repeat a few weight
    vectors), and ``y0``/``h`` are still per entry.
    """

    y0: jax.Array  # [*B]
    h: jax.Array  # [*B]
    A: jax.Array  # [*B, N - 1] intercepts, or [R, N - 1] with rows
    B: jax.Array  # [*B, N - 1] slopes, or [R, N - 1] with rows
    rows: jax.Array | None = None  # [*B] table of each batch entry

    def __call__(self, x):
        nseg = self.A.shape[-1]
        batch = self.y0.shape
        pos = (x - self.y0[..., None]) / self.h[..., None]
        i = jnp.clip(jnp.floor(pos), 0, nseg - 1).astype(jnp.int32)
        if self.rows is None:
            return _lookup(self.A, self.B, batch, i, x)
        # Shared tables: one flat index into all of them (they are few, and replicated).
        lead = (1,) * (x.ndim - 1 - len(batch))
        flat = self.rows.reshape(*lead, *batch, 1) * nseg + i
        A = self.A.reshape(-1).at[flat].get(mode="promise_in_bounds")
        return A + self.B.reshape(-1).at[flat].get(mode="promise_in_bounds") * x


@_dataclass
class BlendedMap:
    """A map interpolated between the maps of neighbouring members of a family of weights.

    T(x) = Σ_p coef[..., p] · T_p(x) with T_p the :class:`LatticeMap` ``parts[p]`` (shared
    tables, one row per batch entry). With ``coef`` the Lagrange weights of a point of a
    one-parameter family of weight vectors at its nearest nodes, this is the family's map
    interpolated along the family (:func:`family_transport_map`).
    """

    parts: tuple  # P LatticeMaps with rows, batch [*B]
    coef: jax.Array  # [*B, P]

    def __call__(self, x):
        out = None
        for p, part in enumerate(self.parts):
            term = self.coef[..., p, None] * part(x)
            out = term if out is None else out + term
        return out


def _lookup(A, B, batch, i, x):
    """A[i] + B[i] x, with one table per batch entry of the map (batch axes broadcast with x)."""
    nseg = A.shape[-1]
    if not batch:
        return A.at[i].get(mode="promise_in_bounds") + B.at[i].get(mode="promise_in_bounds") * x
    # One table per weight vector: a gather along the segment axis only, with the batch axes
    # as gather batch dimensions. Under a sharded batch (tables and points sharded alike)
    # each device then reads its own tables; a flat index into all tables would make XLA
    # all-gather them.
    lead = jnp.broadcast_shapes(batch, x.shape[:-1])
    i = jnp.broadcast_to(i, (*lead, x.shape[-1]))
    pad = (1,) * (len(lead) - len(batch))
    A = A.reshape(*pad, *batch, nseg)
    B = B.reshape(*pad, *batch, nseg)
    take = functools.partial(jnp.take_along_axis, indices=i, axis=-1, mode="promise_in_bounds")
    return take(A) + take(B) * x


@_dataclass
class TransportMap:
    """T(y) = loc + scale · T₀((y - loc·Σw) / scale), clipped to the prior's support.

    Attributes:
      standard: the map T₀ of the standardised prior (a :class:`StableMap`,
        :class:`UniformPairMap`, :class:`LatticeMap` or :class:`TabulatedMap`).
      loc: prior location (scalar or ``[d]``).
      scale: prior scale (scalar or ``[d]``).
      wsum: Σ_k w_k, ``[*B]``.
      low: lower end of the prior's support.
      high: upper end of the prior's support.
    """

    standard: Any
    loc: Any
    scale: Any
    wsum: jax.Array
    low: Any
    high: Any

    @half_in_float32("y")
    def __call__(self, y):
        """Applies T to ``y`` of shape ``[..., d]``; the map's batch axes broadcast with ``...``."""
        y = _checks.latent("y", y)
        try:
            jnp.broadcast_shapes(self.wsum.shape, y.shape[:-1])
        except ValueError:
            raise ValueError(
                f"y {y.shape} does not broadcast with the map's batch shape {self.wsum.shape}"
            ) from None
        dtype = y.dtype
        shift = self.loc * self.wsum[..., None]
        x = (y - shift) / self.scale
        out = self.loc + self.scale * self.standard(x)
        return jnp.clip(out, self.low, self.high).astype(dtype)


# --------------------------------------------------------------------------------------------
# Construction.


def transport_map(
    prior,
    weights,
    *,
    method: str = "auto",
    num_grid: int | None = None,
    order: int = 8,
) -> TransportMap:
    """The monotone map y ↦ F_Z⁻¹(F_Y(y)) for Y = Σ_k w_k Z_k, Z_k i.i.d. from ``prior``.

    Applied component-wise to a combination of independent prior draws, the output has exactly
    the prior's law (Agustsson et al., Theorem 2; the map is optimal for any convex cost).

    Args:
      prior: any prior (see :mod:`latentot.priors`).
      weights: ``[..., k]``; leading axes give a batch of maps. May be traced. All-zero weights
        (a point mass, no map exists) raise ``ValueError`` when concrete; traced, they give the
        map of weight 1 on one draw (the identity). bfloat16 and float16 weights build float32
        tables (the map returns the dtype it is applied to). Concrete weights (a NumPy array,
        also under ``jax.jit``) get one FFT table per distinct multiset of weights, built at
        once (under ``jax.jit``: while tracing, so the compiled program only looks it up) and,
        for a pytree prior with concrete parameters, cached for later calls with the same
        prior and weights; traced weights build their tables inside the program, every call.
      method: ``"auto"`` (closed form where one exists, else ``"fft"``; but ``"quadrature"``
        for heavy-tailed priors, see :func:`latentot.convolution.light_tailed`, and for a traced
        batch ``[m, ..., k]`` of weights, which may be sharded: XLA's SPMD partitioner replicates
        FFT operands, so pass ``method="fft"`` for a traced batch that is not), ``"closed"`` (raise
        ``ValueError`` when there is none), ``"fft"`` (the lattice map of
        :mod:`latentot.convolution`: a few FFTs per weight vector) or ``"quadrature"`` (the
        quantile-quadrature map of :class:`TabulatedMap`: about 1000× slower to build, but it
        resolves tail probabilities down to 1e-20 and heavy tails without truncation; use it as a
        reference). ``"numerical"`` is the former name of ``"quadrature"``.
      num_grid: grid points of a numerical map, >= 64 (default: 4096 lattice cells for
        ``"fft"``, 2048 grid points for ``"quadrature"``).
      order: Gauss-Legendre nodes per quadrature panel (``"quadrature"`` only).

    Returns:
      A :class:`TransportMap`; call it on ``y`` of shape ``[..., d]``.
    """
    _checks.check_prior(prior)
    if method not in _METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, _METHODS))}, got {method!r}")
    if num_grid is not None:
        num_grid = _checks.check_positive_int("num_grid", num_grid, minimum=64)
    cw = _checks.concrete(weights)  # before the conversion, which is traced under jit
    w = _checks.as_float("weights", weights)
    w = w.astype(compute_dtype(w.dtype))  # half-precision weights: float32 tables
    if w.ndim < 1 or w.shape[-1] < 1:
        raise ValueError(f"weights must have shape [..., k] with k >= 1, got {w.shape}")
    if cw is not None and np.any(np.all(cw == 0, axis=-1)):
        raise ValueError("weights must not all be zero: Σ w_k Z_k is then a point mass")

    std, loc, scale = _priors.standardize(prior)
    standard = _closed_form(std, w) if method in ("auto", "closed") else None
    if standard is None:
        if method == "closed":
            raise ValueError(
                f"no closed-form map for {type(prior).__name__} with {w.shape[-1]} weights; "
                "use method='auto', 'fft' or 'quadrature'"
            )
        if method == "auto" and not _light_tailed(std):
            method = "quadrature"  # heavy tails: the lattice would have to truncate them
        if method == "auto" and cw is None and w.ndim > 1:
            # A traced batch of weight vectors may be sharded, and XLA's SPMD partitioner
            # replicates the operands of an FFT (it all-gathers every device's tables); the
            # quadrature map partitions along the batch. method="fft" opts in.
            method = "quadrature"
        if method in ("quadrature", "numerical"):
            standard = _tabulate(std, w, num_grid=num_grid or 2048, order=order)
        else:
            standard = _lattice(std, w, cw, num_grid=num_grid or 4096)
    low, high = _priors.support(prior)
    return TransportMap(standard, loc, scale, jnp.sum(w, -1), low, high)


_METHODS = ("auto", "closed", "fft", "quadrature", "numerical")


def family_transport_map(
    prior, weights, nodes, kind, pos, *, method: str = "auto", num_grid: int | None = None
) -> TransportMap | None:
    """The maps of traced weight vectors that lie on a few concrete one-parameter families.

    Keyframe paths with a traced t are such a case (:func:`latentot.splines.spline_family`):
    every frame's weights are a point of one of at most three curves in weight space. The FFT
    tables of every node of every curve are built once, while tracing (and cached like those
    of any concrete weights, see :func:`transport_map`), and each batch entry's map is the
    cubic Lagrange interpolant, along its curve, of the maps of the four nearest nodes
    (:class:`BlendedMap`). The compiled program thus looks up four tables per point instead of
    building a table per batch entry (per frame) on every call.

    Args:
      prior: any prior.
      weights: ``[*B, k]``, the batch's own weights (traced); only their sums are used (the
        prior's location is applied through them).
      nodes: ``[V, M, k]`` (concrete), the weight vectors at M >= 4 nodes along each of V
        curves; the curves' maps should be smooth in the node coordinate.
      kind: ``[*B]`` int, each batch entry's curve.
      pos: ``[*B]``, each batch entry's position along its curve in node units, in [0, M - 1]
        (a non-finite position gives a NaN map).
      method: as in :func:`transport_map`; ``"auto"`` and ``"fft"`` interpolate the tables.
      num_grid: lattice cells of each node's table (default 4096).

    Returns:
      A :class:`TransportMap`, or ``None`` where the tables cannot be built while tracing (a
      closed form applies, the method asks for another map, the prior's parameters are
      traced, or, for ``"auto"``, its tails are heavy); the caller then uses
      :func:`transport_map`.
    """
    _checks.check_prior(prior)
    if method not in ("auto", "fft"):
        return None
    std, loc, scale = _priors.standardize(prior)
    leaves = jax.tree_util.tree_leaves(std)
    if any(isinstance(x, jax.core.Tracer) for x in leaves):
        return None
    nodes = np.asarray(nodes, np.float64)
    if nodes.ndim != 3 or nodes.shape[1] < 4:
        raise ValueError(f"nodes must be [V, M, k] with M >= 4, got shape {nodes.shape}")
    w = _checks.as_float("weights", weights)
    dtype = compute_dtype(w.dtype)
    w = w.astype(dtype)
    if method == "auto" and (
        _closed_form(std, jnp.zeros(nodes.shape[-1], dtype)) is not None or not _light_tailed(std)
    ):
        return None
    if num_grid is not None:
        num_grid = _checks.check_positive_int("num_grid", num_grid, minimum=64)
    num_kinds, m = nodes.shape[:2]
    with jax.ensure_compile_time_eval():
        tables = _lattice(std, nodes.astype(dtype), nodes.astype(dtype), num_grid=num_grid or 4096)
    rows = tables.rows.reshape(num_kinds * m)  # row of node j of curve v: rows[v * m + j]
    y0, h = tables.y0.reshape(-1), tables.h.reshape(-1)
    # The four nodes j0 … j0 + 3 around each position (fewer near the ends: the window is
    # clamped inside [0, M - 1]) and their cubic Lagrange weights.
    pos = jnp.asarray(pos, dtype)
    finite = jnp.isfinite(pos)
    p = jnp.where(finite, jnp.clip(pos, 0, m - 1), 0)
    j0 = jnp.clip(jnp.floor(p).astype(jnp.int32) - 1, 0, m - 4)
    x = p - j0.astype(dtype)
    coef = jnp.stack(
        [
            -(x - 1) * (x - 2) * (x - 3) / 6,
            x * (x - 2) * (x - 3) / 2,
            -x * (x - 1) * (x - 3) / 2,
            x * (x - 1) * (x - 2) / 6,
        ],
        -1,
    )
    coef = jnp.where(finite[..., None], coef, jnp.nan)
    first = jnp.asarray(kind, jnp.int32) * m + j0
    parts = tuple(
        LatticeMap(y0[first + q], h[first + q], tables.A, tables.B, rows[first + q])
        for q in range(4)
    )
    low, high = _priors.support(prior)
    return TransportMap(BlendedMap(parts, coef), loc, scale, jnp.sum(w, -1), low, high)


def _lattice(std, w, cw, *, num_grid):
    """The FFT-lattice map of every weight vector of ``w`` ``[..., k]``, as one batched build.

    The law of Σ w_k Z_k depends only on the multiset of the weights, so concrete weight vectors
    are sorted and each distinct one is built once (a 7 × 7 grid has 10 distinct multisets, a
    looping spline one per distinct fraction of t); the batch entries then share those tables
    (:class:`LatticeMap` ``rows``). The tables of concrete weights are built right away, also
    while tracing, wherever the prior's parameters are concrete: under ``jax.jit`` they are then
    constants of the compiled program, not work done on every call. For a pytree prior they are
    also kept in a small cache keyed by the prior's type and parameters and the weights, so that
    eager calls with the same weights (a grid of other corners, a path through other keyframes)
    reuse them.
    """
    batch, k = w.shape[:-1], w.shape[-1]
    if cw is None:
        y0, h, A, B = _lattice_build(std, w.reshape(-1, k), num_grid=num_grid)
        return LatticeMap(
            y0.reshape(batch), h.reshape(batch), A.reshape(*batch, -1), B.reshape(*batch, -1)
        )
    keys = np.sort(cw.reshape(-1, k), axis=-1)
    unique, inverse = np.unique(keys, axis=0, return_inverse=True)
    unique = unique.astype(w.dtype)
    rows = inverse.reshape(batch).astype(np.int32)
    with jax.ensure_compile_time_eval():  # concrete priors: built now, constants under jit
        key = _cache_key(std, unique, num_grid)
        build = functools.partial(_lattice_padded, std, unique, num_grid=num_grid)
        y0, h, A, B = build() if key is None else _cached(key, build)
        return LatticeMap(y0[rows], h[rows], A, B, jnp.asarray(rows))


def _cached(key, build):
    """``build()`` (a tuple of concrete arrays), memoised under ``key`` in a small LRU cache."""
    with _CACHE_LOCK:
        value = _CACHE.get(key)
        if value is not None:
            _CACHE.move_to_end(key)
            return value
    value = tuple(build())
    with _CACHE_LOCK:
        _CACHE[key] = value
        while len(_CACHE) > 1 and sum(x.nbytes for v in _CACHE.values() for x in v) > _CACHE_BYTES:
            _CACHE.popitem(last=False)
    return value


def _lattice_padded(std, unique, *, num_grid):
    """``(y0, h, A, B)`` of ``unique`` ``[m, k]`` (NumPy), built in chunks of a fixed size.

    One weight vector is built alone; more are padded to a multiple of ``_CHUNK`` and built
    ``_CHUNK`` at a time, so that grids and paths of any size share one compilation per prior
    type and k (compiling the build takes far longer than running it).
    """
    m = len(unique)
    size = 1 if m == 1 else _CHUNK
    padded = np.concatenate([unique, np.repeat(unique[:1], -m % size, 0)])
    parts = [
        _lattice_build(std, jnp.asarray(padded[i : i + size]), num_grid=num_grid)
        for i in range(0, len(padded), size)
    ]
    return tuple(jnp.concatenate(x)[:m] for x in zip(*parts, strict=True))


_CHUNK = 8


# Tables of concrete weights, most recently used last; at most _CACHE_BYTES in all.
_CACHE: collections.OrderedDict = collections.OrderedDict()
_CACHE_LOCK = threading.Lock()
_CACHE_BYTES = 64 << 20


def _cache_key(std, unique, num_grid):
    """A hashable key for the tables of ``std`` and ``unique``, or ``None`` (no caching)."""
    prior = _prior_key(std)
    if prior is None:
        return None
    return prior, unique.dtype.str, unique.tobytes(), *unique.shape, num_grid


def _prior_key(std):
    """A hashable key for the law of ``std``: its type and parameters, or ``None``.

    ``None`` unless ``std`` is a pytree whose leaves are all concrete numbers or arrays (an
    object that is not a pytree has no parameters that could key it).
    """
    leaves, tree = jax.tree_util.tree_flatten(std)
    if not all(isinstance(x, (jax.Array, np.ndarray, float, int)) for x in leaves):
        return None
    if any(isinstance(x, jax.core.Tracer) for x in leaves):
        return None
    params = tuple((np.asarray(x).dtype.str, np.shape(x), np.asarray(x).tobytes()) for x in leaves)
    return type(std), tree, params


def _light_tailed(std):
    """:func:`latentot.convolution.light_tailed`, memoised for priors with a key."""
    key = _prior_key(std)
    if key is None:
        return convolution.light_tailed(std)
    if key not in _LIGHT:
        if len(_LIGHT) > 256:
            _LIGHT.clear()
        _LIGHT[key] = convolution.light_tailed(std)
    return _LIGHT[key]


_LIGHT: dict = {}


def _lattice_build(std, flat, *, num_grid):
    """``(y0, h, A, B)`` for the weight vectors ``flat`` ``[m, k]``; jitted for pytree priors."""
    leaves = jax.tree_util.tree_leaves(std)
    if all(isinstance(x, (jax.Array, np.ndarray, float, int)) for x in leaves):
        return _lattice_jit(std, flat, kind=type(std), num_grid=num_grid)
    return _lattice_eager(std, flat, num_grid=num_grid)


def _lattice_eager(std, flat, *, num_grid):
    def one(wk):
        y0, h, t = convolution.fft_table(std, wk, num_grid=num_grid)
        y = y0 + h * jnp.arange(num_grid, dtype=t.dtype)
        return (y0, h, *_segments(y, t))

    return jax.vmap(one)(flat)


_lattice_jit = jax.jit(
    lambda std, flat, *, kind, num_grid: _lattice_eager(std, flat, num_grid=num_grid),
    static_argnames=("kind", "num_grid"),
)


def _closed_form(std, w):
    p = getattr(std, "stable_norm_order", None)
    if p is not None:
        return StableMap(_safe(jnp.sum(jnp.abs(w) ** p, -1) ** (1 / p)))
    if isinstance(std, _priors.Uniform) and w.shape[-1] == 2:
        aw = jnp.abs(w)
        s = _safe(jnp.sum(aw, -1))
        return UniformPairMap(s, jnp.max(aw, -1) / s, jnp.min(aw, -1) / s)
    return None


def _safe(x):
    return jnp.where(x > 0, x, 1)


def _tabulate(std, w, *, num_grid, order):
    """Tabulates T₀ for every weight vector of ``w`` [..., k]; compiled once per shape/prior type.

    Priors registered as pytrees (all of latentot's, and any user dataclass registered with
    ``jax.tree_util.register_dataclass``) go through a cached ``jax.jit``; other objects are
    tabulated op by op.
    """
    leaves = jax.tree_util.tree_leaves(std)
    if all(isinstance(x, (jax.Array, np.ndarray, float, int)) for x in leaves):
        return _tabulate_jit(std, w, kind=type(std), num_grid=num_grid, order=order)
    return _tabulate_eager(std, w, num_grid=num_grid, order=order)


def _tabulate_eager(std, w, *, num_grid, order):
    batch = w.shape[:-1]
    flat = w.reshape(-1, w.shape[-1])
    build = jax.vmap(lambda wk: _tabulate_one(std, wk, num_grid=num_grid, order=order))
    m, c, A, B = build(flat)
    vmax = 1 - 4 / num_grid
    return TabulatedMap(
        m.reshape(batch), c.reshape(batch), A.reshape(*batch, -1), B.reshape(*batch, -1), vmax
    )


# The prior's type is a static argument: JAX treats field-less dataclass pytrees of different
# types as the same tree structure, which would otherwise share one compiled table.
_tabulate_jit = jax.jit(
    lambda std, w, *, kind, num_grid, order: _tabulate_eager(
        std, w, num_grid=num_grid, order=order
    ),
    static_argnames=("kind", "num_grid", "order"),
)


def _tabulate_one(std, w, *, num_grid, order):
    """Grid and segment coefficients of T₀ for one weight vector ``w`` [k].

    The weights are sorted by |w| descending. The partial sums S_j = Σ_{i ≤ j} w_i Z_i are
    built one component at a time, each step a quadrature over the new component's quantiles:

        F_{S_j}(y) = E[F_{S_{j-1}}(y - w_j Z)],    F_{S_{j-1}}(x) = F_Z(T_{j-1}(x)),

    where T_{j-1} is the previous step's map (so every intermediate law is stored in the same
    form as the result, and its tails come from the prior's own CDF). The first, largest term
    is exact: T_1(x) = x / w_1, or the reflection F_Z⁻¹(1 - F_Z(x / w_1)) for w_1 < 0.
    """
    dtype = w.dtype
    k = w.shape[-1]
    w = w[jnp.argsort(-jnp.abs(w))]
    quart = std.icdf(jnp.asarray([0.25, 0.5, 0.75], dtype))
    med, spread = quart[1], (quart[2] - quart[0]) / 2
    vmax = 1 - 4 / num_grid
    v = jnp.linspace(-vmax, vmax, num_grid + 1, dtype=dtype)
    q, qw = quadrature.quantile_nodes(std, dtype, order=order)

    w1 = jnp.where(w[0] == 0, jnp.ones_like(w[0]), w[0])

    def grid(j):
        m = med * jnp.sum(w[:j])
        c = spread * jnp.sum(jnp.abs(w[:j]))
        return m, c, m + c * v / (1 - jnp.abs(v))

    # The first term w_1 Z: x / w_1, or for w_1 < 0 the reflection x ↦ F_Z⁻¹(1 - F_Z(x / w_1)),
    # tabulated so that its far tails are extrapolated like every other table (finite always).
    m, c, y = grid(1)
    z = y / w1
    t = quantile_map(std, _priors.sf(std, z), std.cdf(z))
    t = convolution.extrapolate_tails(y, t, jnp.isfinite(t))
    reflection = TabulatedMap(m, c, *_segments(y, t), vmax)
    t = jnp.where(w1 > 0, z, t)

    def step_map(x):
        return jnp.where(w1 > 0, x / w1, reflection(x))

    for j in range(1, k):
        m, c, y = grid(j + 1)
        x = step_map(y[:, None] - w[j] * q[None, :])
        f = std.cdf(x) @ qw
        s = _priors.sf(std, x) @ qw
        t_new = quantile_map(std, f, s)
        t_new = jax.lax.cummax(
            convolution.extrapolate_tails(
                y, t_new, (jnp.minimum(f, s) > _RESOLVED) & jnp.isfinite(t_new)
            )
        )
        # A zero weight adds nothing (the grid is unchanged): keep the previous map exactly, so
        # that e.g. lerp at t = 0 or 1 and the corners of a grid are mapped by the identity.
        t = jnp.where(w[j] == 0, step_map(y), t_new)
        step_map = TabulatedMap(m, c, *_segments(y, t), vmax)
    return m, c, *_segments(y, t)


_RESOLVED = 1e-20  # tail probabilities below this are past the quadrature's reach (u >= 1e-30)


def _segments(y, t):
    """Intercepts and slopes of the segments through the points (y, t)."""
    slope = (t[1:] - t[:-1]) / (y[1:] - y[:-1])
    return t[:-1] - slope * y[:-1], slope
