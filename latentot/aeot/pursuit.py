"""Where codes are not Gaussian: a block transport map found by projection pursuit.

:class:`Frame` is the map (a learned block, exact linear and monotone layers elsewhere) and
:func:`find_frame` its search from the codes; ``docs/pursuit.md`` gives the formulas and what
they assume.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from scipy import special

from latentot.aeot.ica import ICA_PATIENCE, fast_ica, map_rows, row_sums
from latentot.aeot.monotone import (
    MonotoneMap,
    gaussian_knots,
    sample_quantiles,
    strictly_increasing,
)

__all__ = ["Frame", "fast_ica", "find_frame", "held_out_size", "ks_normal"]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class MarginalLayer:
    """``z ↦ R g(Rᵀ z)``: an orthogonal R ``[m, m]`` and m monotone maps g (noise → codes)."""

    rotation: jax.Array
    marginal: MonotoneMap

    @property
    def forward_dim(self) -> int:
        return self.rotation.shape[0]

    def forward(self, z, inverse=False):
        r = self.rotation.astype(z.dtype)
        c = z @ r
        c = self.marginal.inverse(c) if inverse else self.marginal(c)
        return c @ r.T


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class RadialLayer:
    """``z ↦ z ρ(‖z‖) / ‖z‖`` with ρ increasing and ρ(0) = 0 (noise → codes): the gradient of
    the convex function ``∫₀^‖z‖ ρ``, injective on the whole space (its first knot is the
    origin, so no radius is mapped through it)."""

    radius: MonotoneMap
    dim: int = dataclasses.field(metadata={"static": True})

    @property
    def forward_dim(self) -> int:
        return self.dim

    def forward(self, z, inverse=False):
        r = jnp.sqrt(jnp.sum(z * z, axis=-1, keepdims=True))
        f = self.radius.inverse if inverse else self.radius
        return z * (f(r) / jnp.maximum(r, jnp.finfo(z.dtype).tiny))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LinearLayer:
    """``z ↦ z A`` with A ``[m, m]`` symmetric positive definite (noise → codes)."""

    matrix: jax.Array
    inverse_matrix: jax.Array

    @property
    def forward_dim(self) -> int:
        return self.matrix.shape[0]

    def forward(self, z, inverse=False):
        a = self.inverse_matrix if inverse else self.matrix
        return z @ a.astype(z.dtype)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class AffineLayer(LinearLayer):
    """``y ↦ y S + c`` with S ``[k, k]`` symmetric positive definite (the learned block's
    moment correction, :func:`moment_correction`, and the complement's re-whitening about the
    stage's mean, :func:`_whitening_layer`)."""

    shift: jax.Array

    def forward(self, y, inverse=False):
        if inverse:
            return (y - self.shift.astype(y.dtype)) @ self.inverse_matrix.astype(y.dtype)
        return y @ self.matrix.astype(y.dtype) + self.shift.astype(y.dtype)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Frame:
    """The block map around a learned k-dimensional map f.

    ``T(x) = m + Q [B(f(Q_Vᵀ x)); σ ⊙ G(Q_Uᵀ x)]`` with G the composition of the layers (the
    last fitted applied first) and B the block's moment correction (the identity when
    ``block`` is None).

    Attributes:
      mean: m ``[d]``.
      basis: Q ``[d, d]`` orthonormal columns: the first k span the learned block V, the rest U.
      scale: σ ``[d - k]``, the codes' standard deviations along U's columns.
      layers: the Gaussianisation layers of the whitened U part, in fitting order (codes → noise).
      k: the learned block's dimension (static).
      block: an :class:`AffineLayer` B applied after f, or None.
    """

    mean: jax.Array
    basis: jax.Array
    scale: jax.Array
    layers: tuple
    k: int = dataclasses.field(metadata={"static": True})
    block: AffineLayer | None = None

    @property
    def dim(self) -> int:
        return self.basis.shape[0]

    @property
    def active(self) -> int:
        """The complement's leading coordinates that the layers act on (the rest, where the
        codes' variance is rounding noise, are mapped linearly)."""
        return self.layers[0].forward_dim if self.layers else 0

    def complement(self, a: jax.Array) -> jax.Array:
        """``σ ⊙ G(a)``: ``[..., d − k] → [..., d − k]``."""
        if self.layers:
            r = self.active
            head = a[..., :r]
            for layer in reversed(self.layers):
                head = layer.forward(head)
            a = jnp.concatenate([head, a[..., r:]], axis=-1)
        return a * self.scale.astype(a.dtype)

    def complement_inverse(self, c: jax.Array) -> jax.Array:
        """The inverse of :meth:`complement`: ``[..., d − k] → [..., d − k]``."""
        z = c / self.scale.astype(c.dtype)
        if self.layers:
            r = self.active
            head = z[..., :r]
            for layer in self.layers:
                head = layer.forward(head, inverse=True)
            z = jnp.concatenate([head, z[..., r:]], axis=-1)
        return z

    def transport(self, x: jax.Array, inner) -> jax.Array:
        """T(x) for noise ``[..., d]``, with ``inner`` the learned map ``[..., k] → [..., k]``."""
        q = self.basis.astype(x.dtype)
        a = x @ q
        parts = [self.complement(a[..., self.k :])]
        if self.k:
            v = inner(a[..., : self.k])
            parts.insert(0, v if self.block is None else self.block.forward(v))
        return self.mean.astype(x.dtype) + jnp.concatenate(parts, axis=-1) @ q.T


# --------------------------------------------------------------------------------------------
# The search.


def ks_normal(x: np.ndarray) -> np.ndarray:
    """KS statistic of each standardised column of ``x`` ``[n, m]`` against N(0, 1): ``[m]``."""
    x = np.asarray(x, np.float64)
    x = (x - x.mean(0)) / np.maximum(x.std(0), 1e-300)
    n = x.shape[0]
    f = special.ndtr(np.sort(x, axis=0))
    i = np.arange(1, n + 1)[:, None]
    return np.maximum(np.max(i / n - f, axis=0), np.max(f - (i - 1) / n, axis=0))


def ks_two(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample KS statistic of 1-D samples."""
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    fa = np.searchsorted(a, grid, side="right") / len(a)
    fb = np.searchsorted(b, grid, side="right") / len(b)
    return float(np.max(np.abs(fa - fb)))


def ks_critical(n: float, alpha: float) -> float:
    """Asymptotic critical value of the KS statistic at level ``alpha`` for n points."""
    return math.sqrt(-math.log(alpha / 2.0) / (2.0 * n))


@dataclasses.dataclass
class FrameReport:
    k: int
    gap: float
    m: int
    layers: list


#: Eigenvalues of the codes' covariance below this fraction of the largest are rounding noise.
RANK_RTOL = 1e-10

#: ``fit`` holds out a fifth of the codes up to this many, and a tenth beyond ten times it.
MAX_HELD_OUT = 10_000

#: FastICA's first pass uses at most ``max(ICA_SAMPLE, 4 m²)`` of the fitting codes, drawn at
#: random (non-Gaussian directions without extra variance show from about m² codes); a second
#: pass refines its directions on every fitting code.
ICA_SAMPLE = 20_000


def held_out_size(n: int) -> int:
    """How many of n codes ``fit`` holds out for the normality tests when it gets no
    validation codes: a fifth, at most :data:`MAX_HELD_OUT`, and a tenth of them beyond
    ``10 · MAX_HELD_OUT`` codes (the tests' power grows with N)."""
    return min(n // 5, max(MAX_HELD_OUT, n // 10))


def project(codes, mean, basis, rows=None, chunk=65536) -> np.ndarray:
    """``(codes[rows] − mean) @ basis`` in chunks (no copy of the codes): ``[n, k]``."""
    idx = np.arange(len(codes)) if rows is None else rows
    out = np.empty((len(idx), basis.shape[1]))
    for i in range(0, len(idx), chunk):
        out[i : i + chunk] = (np.asarray(codes[idx[i : i + chunk]], np.float64) - mean) @ basis
    return out


def find_frame(
    codes_fit: np.ndarray,
    codes_val: np.ndarray,
    *,
    fit_rows: np.ndarray | None = None,
    k_max: int = 32,
    gap_ratio: float = 3.0,
    alpha: float = 1e-3,
    knots: int = 257,
    seed: int = 0,
    ica_sample: int = ICA_SAMPLE,
    mesh: Mesh | None = None,
    code_moments: tuple[np.ndarray, np.ndarray] | None = None,
):
    """The frame of the codes (``docs/pursuit.md``).

    Every fitting code counts: the moments, FastICA's fixed-point sums, the layers' quantiles
    and the radius law use all of them (FastICA's first pass uses ``ica_sample``, then it is
    refined on all). The codes are projected once to float32 on the device (sharded by rows over
    ``mesh``), so the search holds at most about the codes' size again.

    Args:
      codes_fit: ``[N, d]`` codes; the moments use every row, the fits ``fit_rows``. A host
        array, or with a ``mesh`` across processes also a global ``jax.Array`` sharded by
        rows (its rows are then gathered on the devices, each process adding its own).
      codes_val: ``[M, d]`` held-out codes for the normality tests (a host array, the same
        on every process).
      fit_rows: the rows of ``codes_fit`` to fit on (default: all).
      k_max: the learned block has at most this many dimensions.
      gap_ratio: an eigenvalue ratio λᵢ / λᵢ₊₁ at least this large is a gap.
      alpha: the tests' level (Bonferroni-corrected over the components).
      knots: knots of each monotone map.
      seed: seed of FastICA's first-pass sample and of the covariance correction's draws.
      ica_sample: see :data:`ICA_SAMPLE`.
      mesh: a mesh (Auto axes), of this process's devices or across processes: the fitting
        rows are sharded over all its axes (cut to a multiple of its size) and every sum and
        quantile is reduced across them, so every process builds the same frame.
      code_moments: :func:`moments` of ``codes_fit`` if the caller has them (one pass fewer
        over the codes).

    Returns:
      ``(frame, report)``.
    """
    codes_fit = codes_fit if _is_global(codes_fit) else np.asarray(codes_fit)
    rows = np.arange(codes_fit.shape[0]) if fit_rows is None else np.asarray(fit_rows)
    if mesh is not None:
        rows = rows[: len(rows) - len(rows) % mesh.size]
    d = codes_fit.shape[1]
    # From every code, held-out ones too.
    mean, cov = moments(codes_fit) if code_moments is None else code_moments
    lam, q = np.linalg.eigh(cov)
    lam, q = lam[::-1], q[:, ::-1]
    lam = np.maximum(lam, lam[0] * 1e-12 + 1e-300)
    rng = np.random.default_rng(seed)
    val_rows = np.arange(len(codes_val))
    k, gap = _spectral_gap(lam, k_max, gap_ratio)
    spikes, spike_gap = _spikes(lam, codes_fit.shape[0], k_max)
    if spikes > k:
        k, gap = spikes, spike_gap
    if k:  # the block must be non-Gaussian somewhere, else it is linear
        white = q[:, :k] / np.sqrt(lam[:k])
        zb = _projected(codes_fit, rows, mean, white, mesh)
        wb = _ica(zb, rng, ica_sample, mesh)
        del zb
        # Its principal and its FastICA components are tested (a law with clusters can look
        # Gaussian along every one of either).
        vb = _project32(codes_val, val_rows, mean, white)
        if max(np.max(ks_normal(vb)), np.max(ks_normal(vb @ wb.T))) < ks_critical(
            len(vb), alpha / d
        ):
            k = 0
    u = q[:, k:]
    scale = np.sqrt(lam[k:])
    m = d - k
    # The layers act on the directions where the codes vary: not on rounding noise (codes of
    # rank r < d, e.g. an encoder whose last hidden layer is narrower than its output).
    active = int(np.sum(lam[k:] > lam[0] * RANK_RTOL))
    white = u[:, :active] / scale[:active]
    zs = _projected(codes_fit, rows, mean, white, mesh)
    zv = _projected(codes_val, val_rows, mean, white, None)
    layers, info = _gaussianise(
        zs, zv, alpha=alpha, knots=knots, rng=rng, ica_sample=ica_sample, mesh=mesh
    )
    layers = _covariance_correction(layers, active, rng)
    frame = Frame(
        mean=jnp.asarray(mean, jnp.float32),
        basis=jnp.asarray(q, jnp.float32),
        scale=jnp.asarray(scale, jnp.float32),
        layers=tuple(layers),
        k=k,
    )
    report = FrameReport(k, gap, m, info)
    return frame, report


def _project32(codes, rows, mean, basis) -> np.ndarray:
    """``(codes[rows] − mean) @ basis`` in float32, computed in float64: ``[n, r]``."""
    return ((np.asarray(codes[rows], np.float64) - mean) @ basis).astype(np.float32)


@functools.partial(jax.jit, donate_argnums=0)
def _put_rows(out, part, start):
    return lax.dynamic_update_slice_in_dim(out, part, start, axis=0)


def _projected(codes, rows, mean, basis, mesh: Mesh | None, chunk=16384) -> jax.Array:
    """``(codes[rows] − mean) @ basis`` ``[n, r]`` in float32 on the device, or sharded by rows
    over every axis of ``mesh``, built a chunk (or a shard) at a time: the host holds a chunk,
    never the whole projection."""
    shape = (len(rows), basis.shape[1])
    if _is_global(codes):
        return _gather_projected(codes, rows, mean, basis, mesh)
    if mesh is not None:
        sharding = NamedSharding(mesh, P(tuple(mesh.axis_names)))
        return jax.make_array_from_callback(
            shape, sharding, lambda index: _project32(codes, rows[index[0]], mean, basis)
        )
    out = jnp.zeros(shape, jnp.float32)
    for i in range(0, len(rows), chunk):
        part = _project32(codes, rows[i : i + chunk], mean, basis)
        out = _put_rows(out, jnp.asarray(part), i)
    return out


def _is_global(codes) -> bool:
    """``codes`` is a ``jax.Array`` of which this process holds only some rows."""
    return isinstance(codes, jax.Array) and not codes.is_fully_addressable


@functools.partial(jax.jit, static_argnames=("mesh", "dtype"))
def _gather(codes, rows, mean, basis, mesh, dtype):
    """:func:`_gather_projected`: device ``b`` of the mesh receives, in step ``b``, the rows
    ``rows[b · block : (b + 1) · block]``, each from the device that holds it."""
    axes = tuple(mesh.axis_names)
    block = rows.shape[0] // mesh.size
    width = codes.shape[1] if basis is None else basis.shape[1]

    def local(c, rows, mean, basis):
        me = lax.axis_index(axes)
        n = c.shape[0]

        def one(b, out):
            idx = lax.dynamic_slice_in_dim(rows, b * block, block) - me * n
            mine = (idx >= 0) & (idx < n)
            y = c[jnp.clip(idx, 0, n - 1)]
            if basis is not None:
                y = y.astype(jnp.float32) - mean
                y = jnp.matmul(y, basis, precision=lax.Precision.HIGHEST)
            y = lax.psum(jnp.where(mine[:, None], y, 0), axes)  # one device holds each row
            return jnp.where(b == me, y.astype(dtype), out)

        return lax.fori_loop(0, mesh.size, one, jnp.zeros((block, width), dtype))

    return jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(P(axes), P(), P(), P()),
        out_specs=P(axes),
        check_vma=False,
    )(codes, rows, mean, basis)


def _gather_projected(codes, rows, mean, basis, mesh: Mesh, dtype=jnp.float32) -> jax.Array:
    """``(codes[rows] − mean) @ basis`` ``[n, r]`` of ``codes`` ``[N, d]`` sharded by rows over
    every axis of ``mesh`` (float32 on the devices), sharded the same way (n a multiple of the
    mesh's size); with ``basis`` None the rows themselves. Each device's block of rows is
    assembled in turn from every device's own rows (a sum with one non-zero term per row), so
    no device holds more than a block of the ``n`` rows."""
    return _gather(
        codes,
        np.asarray(rows, np.int32),
        None if basis is None else np.asarray(mean, np.float32),
        None if basis is None else np.asarray(basis, np.float32),
        mesh,
        dtype,
    )


def _to_host(x: jax.Array) -> np.ndarray:
    """``x`` as a NumPy array on every process: itself when this process holds all of it,
    else gathered from every process (a row-sharded array across processes)."""
    if x.is_fully_addressable or x.is_fully_replicated:
        return np.asarray(x)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


@functools.partial(jax.jit, static_argnames="sharding")
def _take(z, pick, sharding):
    """``z[pick]`` laid out by ``sharding`` (e.g. replicated: the held-out rows of a global
    array on every process)."""
    return jax.lax.with_sharding_constraint(z[pick], sharding)


def _ica(z: jax.Array, rng, ica_sample: int, mesh: Mesh | None) -> np.ndarray:
    """FastICA's W ``[m, m]`` of whitened rows ``z`` ``[n, m]`` on the device: from FOBI's
    start on all rows, or on ``max(ica_sample, 4 m²)`` random rows first when n is larger, and
    then refined on all rows from there (stopping when no further direction settles,
    :data:`~latentot.aeot.ica.ICA_PATIENCE`)."""
    n, m = z.shape
    first = max(ica_sample, 4 * m * m)
    if mesh is not None:
        first -= first % mesh.size
    if n <= first:
        return fast_ica(z, mesh=mesh)
    pick = np.sort(rng.choice(n, first, replace=False))
    if mesh is None:
        sample = z[jnp.asarray(pick)]
    else:
        sample = _gather_projected(z, pick, None, None, mesh, z.dtype)
    w = fast_ica(sample, mesh=mesh)
    del sample
    return fast_ica(z, start=w, mesh=mesh, patience=ICA_PATIENCE)


def _spectral_gap(lam, k_max, gap_ratio):
    """The gap rule of :func:`find_frame`: ``(k, gap)``.

    k is the last index i ≤ ``k_max`` with λᵢ / λᵢ₊₁ ≥ ``gap_ratio`` among the eigenvalues
    above the bulk (λᵢ₊₁ at least the median of those that are not rounding noise): every spike
    above the bulk. The small end of a spectrum (eigenvalues below the median, where ratios of
    small numbers are large and noisy) is never a gap. k = 1 gives 0 (a one-dimensional block's
    optimal map is its monotone rearrangement, which the layers compute exactly). ``gap`` is the
    ratio at k, or the largest ratio of the eligible ones when there is no gap (1.0 if none is).
    """
    live = lam[lam > lam[0] * RANK_RTOL]
    kk = min(k_max, len(live) - 1)
    if kk < 1:
        return 0, 1.0
    ratios = live[:kk] / live[1 : kk + 1]
    eligible = live[1 : kk + 1] >= np.median(live)
    if not eligible.any():
        return 0, 1.0
    gaps = np.flatnonzero(eligible & (ratios >= gap_ratio))
    if len(gaps):
        i = int(gaps[-1])
        return (i + 1 if i + 1 >= 2 else 0), float(ratios[i])
    return 0, float(np.max(ratios[eligible]))


#: A spike of :func:`_spikes` is an eigenvalue above this multiple of the bulk's
#: Marchenko-Pastur edge.
SPIKE_EDGE_FACTOR = 1.25

#: ... and the last spike is at least this many times the first bulk eigenvalue.
SPIKE_GAP = 1.5


def _spikes(lam, n, k_max):
    """The spikes over a flat bulk (the spiked covariance model): ``(count, gap)``.

    The bulk's level is the median of the eigenvalues ``lam`` (descending) that are not
    rounding noise; with γ = d / n its sample eigenvalues lie below ``(1 + √γ)²`` times it
    (Marchenko-Pastur). The count is the number of eigenvalues above
    :data:`SPIKE_EDGE_FACTOR` times that edge, kept only if it is 2 to ``k_max`` and the last
    spike is :data:`SPIKE_GAP` times the next eigenvalue (a spectrum that decays smoothly, as
    natural images' does, has no flat bulk and no spikes); else ``(0, 1.0)``.
    """
    live = lam[lam > lam[0] * RANK_RTOL]
    if len(live) < 4:
        return 0, 1.0
    edge = np.median(live) * (1.0 + math.sqrt(len(live) / n)) ** 2
    count = int(np.sum(live > SPIKE_EDGE_FACTOR * edge))
    if not 2 <= count <= min(k_max, len(live) - 1):
        return 0, 1.0
    gap = float(live[count - 1] / live[count])
    return (count, gap) if gap >= SPIKE_GAP else (0, 1.0)


def moments(codes, rows=None, chunk=16384):
    """The mean ``[d]`` and covariance ``[d, d]`` (divided by N) of ``codes[rows]`` ``[N, d]``
    (default: every row), accumulated in float64 over chunks of rows (no copy of the codes).

    A ``jax.Array`` of which this process holds only some rows (``rows`` None): each process
    sums its own rows in float64 and the sums are added across processes."""
    if _is_global(codes):
        if rows is not None:
            raise ValueError("moments of some rows of a global array are not supported")
        return _global_moments(codes, chunk)
    rows = np.arange(codes.shape[0]) if rows is None else rows
    d = codes.shape[1]
    acc = np.zeros(d)
    for i in range(0, len(rows), chunk):
        acc += np.sum(codes[rows[i : i + chunk]], axis=0, dtype=np.float64)
    mean = acc / len(rows)
    cov = np.zeros((d, d))
    for i in range(0, len(rows), chunk):
        c = np.asarray(codes[rows[i : i + chunk]], np.float64) - mean
        cov += c.T @ c
    return mean, cov / len(rows)


def _global_moments(codes: jax.Array, chunk: int):
    """:func:`moments` of a row-sharded global array: float64 sums of this process's shards
    (each row once), added across processes."""
    from jax.experimental import multihost_utils

    shards = [s.data for s in codes.addressable_shards if s.replica_id == 0]

    def total(part):  # float64 through its bits: device arrays are float32 without x64
        bits = np.ascontiguousarray(part, np.float64).view(np.uint32)
        parts = np.asarray(multihost_utils.process_allgather(bits), np.uint32)
        return np.sum(parts.view(np.float64), axis=0)

    d = codes.shape[1]
    acc = np.zeros(d)
    for x in shards:
        for i in range(0, x.shape[0], chunk):
            acc += np.sum(np.asarray(x[i : i + chunk]), axis=0, dtype=np.float64)
    mean = total(acc) / codes.shape[0]
    cov = np.zeros((d, d))
    for x in shards:
        for i in range(0, x.shape[0], chunk):
            c = np.asarray(x[i : i + chunk], np.float64) - mean
            cov += c.T @ c
    return mean, total(cov) / codes.shape[0]


@functools.partial(jax.jit, static_argnames="inverse")
def _forward(layer, z, inverse):
    return layer.forward(z, inverse=inverse)


def _layer_to_noise(z, layer):
    return layer.forward(z, inverse=True)


@functools.partial(jax.jit, donate_argnums=1, static_argnames="mesh")
def _to_noise(layer, z: jax.Array, mesh: Mesh | None = None) -> jax.Array:
    """A layer's map from codes to noise on device rows ``z``, in place (z's buffer is reused;
    chunks of rows, :func:`~latentot.aeot.ica.map_rows`)."""
    return map_rows(_layer_to_noise, z, layer, mesh=mesh)


@jax.jit
def _projected_quantiles(z, rotation, levels):
    """Quantiles ``[K, g]`` of the columns of ``z @ rotation`` (``rotation`` ``[m, g]``) at
    ``levels``, the outer ones the exact minimum and maximum (:func:`sample_quantiles`)."""
    c = z @ rotation
    q = jnp.quantile(c, levels, axis=0)
    return q.at[0].set(jnp.min(c, axis=0)).at[-1].set(jnp.max(c, axis=0))


#: The layers' quantiles are taken this many components at a time (a ``[n, g]`` temporary).
QUANTILE_GROUP = 32


def _column_quantiles(z, rotation, levels) -> np.ndarray:
    """:func:`_projected_quantiles` of every column of ``rotation`` ``[m, s]``: ``[s, K]``."""
    s = rotation.shape[1]
    out = []
    for j in range(0, s, QUANTILE_GROUP):
        r = np.zeros((rotation.shape[0], QUANTILE_GROUP), np.float32)
        part = rotation[:, j : j + QUANTILE_GROUP]
        r[:, : part.shape[1]] = part
        q = _projected_quantiles(z, jnp.asarray(r), jnp.asarray(levels, jnp.float32))
        out.append(_to_host(q).astype(np.float64)[:, : part.shape[1]])
    return np.concatenate(out, axis=1).T


def _rotated_ks(zv, rotation) -> np.ndarray:
    """:func:`ks_normal` of the columns of ``zv @ rotation`` ``[m]``, a group of columns at a
    time (the held-out rows grow with N: no ``[n, m]`` float64 copies)."""
    out = []
    for j in range(0, rotation.shape[1], QUANTILE_GROUP):
        r = jnp.asarray(rotation[:, j : j + QUANTILE_GROUP], jnp.float32)
        out.append(ks_normal(np.asarray(zv @ r, np.float64)))
    return np.concatenate(out)


def _marginal_layer(zs, zv, rotation, alpha, knots):
    m = zs.shape[1]
    ks = _rotated_ks(zv, rotation)
    sig = ks >= ks_critical(zv.shape[0], alpha / m)
    if not sig.any():
        return None, 0
    z = gaussian_knots(zs.shape[0], knots)
    x = np.broadcast_to(z, (m, knots)).copy()
    y = x.copy()
    y[sig] = strictly_increasing(_column_quantiles(zs, rotation[:, sig], special.ndtr(z)))
    layer = MarginalLayer(
        jnp.asarray(rotation, jnp.float32),
        MonotoneMap(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)),
    )
    return layer, int(sig.sum())


@jax.jit
def _norms(z):
    return jnp.sqrt(jnp.sum(z * z, axis=1))


def _radial_layer(zs, zv, alpha, knots):
    from scipy import stats

    m = zs.shape[1]
    rv = np.asarray(_norms(zv), np.float64)
    ks = stats.kstest(rv, stats.chi(m).cdf).statistic
    if ks < ks_critical(len(rv), alpha):
        return None, 0
    rs = _to_host(_norms(zs)).astype(np.float64)
    z = gaussian_knots(len(rs), knots)
    levels = special.ndtr(z)
    # ρ = F̂_r⁻¹ ∘ F_χ with the knot (0, 0) first: ρ(0) = 0 and ρ increasing from it, so the
    # layer never sends a small radius through the origin (a linear extrapolation below the
    # first quantile knot could reach ρ < 0 there).
    x = np.concatenate([[0.0], stats.chi(m).ppf(levels)])
    y = np.concatenate([[0.0], sample_quantiles(rs, levels)])
    layer = RadialLayer(
        dim=m,
        radius=MonotoneMap(
            jnp.asarray(strictly_increasing(x[None]), jnp.float32),
            jnp.asarray(strictly_increasing(y[None]), jnp.float32),
        ),
    )
    return layer, 1


SCHEDULE = ("principal", "ica", "radial", "principal")


def _gaussianise(zs, zv, *, alpha, knots, rng, ica_sample, mesh):
    """The layers of :data:`SCHEDULE` that Gaussianise the whitened device rows zs (codes →
    noise), each tested on the held-out zv; returns ``(layers, [(kind, components mapped)])``.
    zs and zv are mapped through each layer in place."""
    m = zs.shape[1]
    layers, info = [], []
    for kind in SCHEDULE:
        if kind == "radial":
            layer, n = _radial_layer(zs, zv, alpha, knots)
        else:
            rot = np.eye(m) if kind == "principal" else _ica(zs, rng, ica_sample, mesh).T
            layer, n = _marginal_layer(zs, zv, rot, alpha, knots)
        info.append((kind, n))
        if layer is None:
            continue
        layers.append(layer)
        zs, zv = _to_noise(layer, zs, mesh), _to_noise(layer, zv)
        white = _whitening_layer(zs, mesh)
        if white is not None:
            layers.append(white)
            zs, zv = _to_noise(white, zs, mesh), _to_noise(white, zv)
    return layers, info


def _moment_sums(z):
    return jnp.sum(z, axis=0), z.T @ z


@functools.partial(jax.jit, static_argnames="mesh")
def _moments32(z, mesh):
    """The mean ``[m]`` and covariance ``[m, m]`` (divided by n) of the rows of ``z``, from
    chunked sums (no ``[n, m]`` temporary)."""
    total, outer = row_sums(_moment_sums, z, mesh=mesh)
    mu = total / z.shape[0]
    return mu, outer / z.shape[0] - jnp.outer(mu, mu)


def _whitening_layer(zs, mesh=None, tol=None):
    """A symmetric whitening about the stage's mean μ when the codes' covariance Σ is not I:
    ``z ↦ (z − μ) Σ^{-½} + μ`` (codes → noise), stored as the :class:`AffineLayer`
    ``w ↦ w Σ^{½} + μ − μ Σ^{½}`` (noise → codes), its exact inverse; or None."""
    n = zs.shape[0]
    mu, c = (np.asarray(a, np.float64) for a in _moments32(zs, mesh))
    lam, v = np.linalg.eigh(0.5 * (c + c.T))
    tol = 4.0 * math.sqrt(2.0 / n) if tol is None else tol
    if np.max(np.abs(lam - 1.0)) < tol:
        return None
    half = (v * np.sqrt(lam)) @ v.T
    inv_half = (v / np.sqrt(lam)) @ v.T
    return AffineLayer(
        jnp.asarray(half, jnp.float32),
        jnp.asarray(inv_half, jnp.float32),
        jnp.asarray(mu - mu @ half, jnp.float32),
    )


def _covariance_correction(layers, m, rng, n=32768):
    """Prepends (codes side) a diagonal linear layer that gives the pushed noise unit variance
    along every coordinate (the diagonal of its covariance, measured on ``n`` prior draws); the
    off-diagonal covariance is left as the layers made it (each re-whitening makes it I on the
    fitted codes, not on the pushed noise)."""
    if not layers:
        return layers
    z = jnp.asarray(rng.standard_normal((n, m)), jnp.float32)
    for layer in reversed(layers):
        z = _forward(layer, z, False)
    sd = np.std(np.asarray(z, np.float64), axis=0)
    if np.max(np.abs(sd - 1.0)) < 4.0 / math.sqrt(n):
        return layers
    scale = LinearLayer(
        jnp.asarray(np.diag(1.0 / sd), jnp.float32), jnp.asarray(np.diag(sd), jnp.float32)
    )
    return [scale, *layers]


def moment_correction(pushed, mean, cov, *, rtol=0.05):
    """The block's moment correction: the Gaussian (Bures) map from the pushed noise's first
    two moments onto the codes' ``mean`` ``[k]`` and ``cov`` ``[k, k]``.

    A learned map adds spread where the codes have almost none (their covariance can span
    six decades on real codes): along such a direction the map's small errors are all of the
    samples' variance. The correction ``y ↦ μ + S (y − μ_T)``, with S the symmetric positive
    definite map ``Σ_T^{-½} (Σ_T^{½} Σ Σ_T^{½})^{½} Σ_T^{-½}``, gives the samples the codes'
    mean and covariance; composed with the learned map it is a composition of two optimal
    maps (the learned one is not exactly optimal either).

    Args:
      pushed: ``[M, k]`` the learned map's images of M prior draws.
      mean: the codes' mean ``[k]``.
      cov: the codes' covariance ``[k, k]``.
      rtol: no correction (None) when every variance of the pushed noise along the codes'
        principal directions is within this relative error of the codes'.

    Returns:
      An :class:`AffineLayer`, or None.
    """
    pushed = np.asarray(pushed, np.float64)
    mu_t = pushed.mean(0)
    cov_t = np.cov(pushed, rowvar=False).reshape(len(mean), len(mean))
    lam, v = np.linalg.eigh(cov)
    lam = np.maximum(lam, lam.max() * 1e-12 + 1e-300)
    ratio = np.einsum("ij,jk,ki->i", v.T, cov_t, v) / lam
    if np.max(np.abs(ratio - 1.0)) <= rtol and np.max(np.abs(mu_t - mean)) <= rtol * math.sqrt(
        lam.max()
    ):
        return None
    half, inv_half = _psd_power(cov_t, 0.5), _psd_power(cov_t, -0.5)
    s = inv_half @ _psd_power(half @ cov @ half, 0.5) @ inv_half
    s = 0.5 * (s + s.T)
    s_inv = _psd_power(s, -1.0)
    shift = mean - mu_t @ s
    return AffineLayer(
        jnp.asarray(s, jnp.float32),
        jnp.asarray(s_inv, jnp.float32),
        jnp.asarray(shift, jnp.float32),
    )


def _psd_power(m, p):
    """``m^p`` for a symmetric positive semi-definite ``m`` (float64; eigenvalues clipped at
    1e-12 of the largest)."""
    w, u = np.linalg.eigh(m)
    w = np.maximum(w, w.max() * 1e-12 + 1e-300)
    return (u * w**p) @ u.T


# --------------------------------------------------------------------------------------------
# Serialisation (latentot.aeot.checkpoint).


def frame_meta(frame: Frame) -> dict:
    """The frame's structure as plain data (its arrays are saved as a pytree)."""
    layers = []
    for layer in frame.layers:
        if isinstance(layer, MarginalLayer):
            layers.append({"type": "marginal", "knots": int(layer.marginal.x.shape[1])})
        elif isinstance(layer, RadialLayer):
            layers.append({"type": "radial", "knots": int(layer.radius.x.shape[1])})
        elif isinstance(layer, AffineLayer):
            layers.append({"type": "affine"})
        else:
            layers.append({"type": "linear"})
    meta = {"dim": frame.dim, "k": frame.k, "active": frame.active, "layers": layers}
    return meta | {"block": True} if frame.block is not None else meta


def frame_template(meta: dict) -> Frame:
    """A frame of zeros with the structure of :func:`frame_meta`'s output."""
    d, k = int(meta["dim"]), int(meta["k"])
    m = d - k
    r = int(meta.get("active", m))

    def z(*shape):
        return jnp.zeros(shape, jnp.float32)

    layers = []
    for spec in meta["layers"]:
        kind = spec["type"]
        if kind == "marginal":
            knots = int(spec["knots"])
            layers.append(MarginalLayer(z(r, r), MonotoneMap(z(r, knots), z(r, knots))))
        elif kind == "radial":
            knots = int(spec["knots"])
            layers.append(RadialLayer(MonotoneMap(z(1, knots), z(1, knots)), r))
        elif kind == "linear":
            layers.append(LinearLayer(z(r, r), z(r, r)))
        elif kind == "affine":
            layers.append(AffineLayer(z(r, r), z(r, r), z(r)))
        else:
            raise ValueError(f"unknown frame layer type {kind!r}")
    block = AffineLayer(z(k, k), z(k, k), z(k)) if meta.get("block") else None
    return Frame(z(d), z(d, d), z(m), tuple(layers), k, block)
