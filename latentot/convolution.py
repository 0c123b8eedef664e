"""Fast numerical transport maps: the law of Y = Σ_k w_k Z_k by FFT convolution on a lattice.

:func:`fft_table` tabulates T₀ = F_Z⁻¹ ∘ F_Y for one weight vector of a standardised prior in a
fixed number of FFTs, using nothing but the prior's ``cdf``/``icdf`` (and ``sf``/``isf`` when it
has them). The steps:

1. **Lattice.** Every term w_k (Z_k - m) (m the prior's median) is put on one lattice of spacing
   h, its cells centred on multiples of h. Each term reaches from the prior's δ = 1e-16 quantiles
   (at most 40 half-interquartile ranges from the median, which only heavy tails reach) scaled
   by |w_k|; h is chosen so that all terms together fill ``num_grid`` cells.
2. **Cell masses.** The mass of each cell is a difference of the prior's CDF at its edges (of
   the survival function in the upper half, so both tails keep their relative precision); the
   mass beyond a term's extent is lumped into its end cells. Cell masses are exact for any prior,
   discontinuous densities (uniform) and narrow terms (small |w_k|, a near point mass) included.
3. **Convolution.** The pmf of the sum is the product of the terms' real FFTs. The lattice holds
   the whole support of the sum, so the circular convolution does not wrap. Each term's cell
   masses sample the density of the term plus a uniform on one cell, so k - 1 such boxes are
   divided out of the product (sinc factors; terms narrower than a few cells carry none). The
   cumulative sums of the pmf give F_Y and 1 - F_Y at the cell edges.
4. **Tails.** An FFT's rounding error is relative to the largest pmf value, so F_Y below about
   1e-4 (float32) is swamped. Each tail is therefore computed again from an exponentially tilted
   lattice (Esscher transform; Grübel and Hermesmeier, 1999): every term's masses are multiplied by
   e^{±α j}, which moves the bulk of the sum into that tail, where the FFT then resolves the pmf
   to full relative precision; the tilt is divided out again and the tail is joined to the body
   at F = 10⁻². α is the pmf's own log-slope at F = 10⁻⁴, so the tilted pmf peaks there.
5. **Map.** T₀ = F_Z⁻¹(F_Y) at every cell edge (through ``icdf`` in the lower half and ``isf``
   in the upper half), continued linearly where tail probabilities are no longer trusted (below
   1e3 δ, where the lumped end masses start to matter, or below 10× the mass a cap lumped) or the
   lattice ends, and made monotone. Between edges T₀ is interpolated linearly.

Heavy tails (see :func:`light_tailed`) would be cut at the cap, so ``transport_map`` uses its
quadrature map for them unless ``method="fft"`` is asked for explicitly.

The cost is 3 (k + 1) FFTs of length ``num_grid``, 2 k ``num_grid`` CDF/survival evaluations and
2 ``num_grid`` quantile evaluations per weight vector; batches of weight vectors are built with
``jax.vmap``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from latentot import priors as _priors
from latentot._promotion import half_in_float32

__all__ = ["extrapolate_tails", "fft_table", "light_tailed"]

_DELTA = 1e-16  # each term's lattice reaches its δ and 1 - δ quantiles (light tails)
_CAP = 40.0  # ... but at most this many half-interquartile ranges from the median (heavy tails)
_JOIN = 1e-2  # tail probability where the tilted tails take over from the untilted body
_TAIL_RESOLVED = 1e-5  # a tilted tail is trusted while its own tilted mass beyond is above this
# Tail probabilities are trusted above _LIGHT_MARGIN · δ (near the lattice's ends the lumped
# masses distort a light-tailed sum's tail, made of joint moderate deviations, already at 1e3 δ)
# and above _LUMP_MARGIN times the mass actually lumped (large where the cap cut a heavy tail;
# there the distortion stays near the end of the dominant term).
_LIGHT_MARGIN = 1e3
_LUMP_MARGIN = 10.0
_SLOPE_AT = 1e-4  # tail probability where the pmf's log-slope sets the tilt
_SLOPE_SPAN = 8  # cells over which that log-slope is measured


def light_tailed(std) -> bool:
    """Whether the lattice holds the standardised prior ``std`` to its 1e-16 quantiles.

    That is, whether P(|Z - median| > 40 half-interquartile ranges) < 1e-12 (true of the
    Gaussian, uniform, Laplace, logistic and Gumbel laws; false of Cauchy and Student-t laws
    with few degrees of freedom). Beyond the cap a heavy tail is lumped into the lattice's end
    cells, and the map is then only good to about the lumped mass (5e-3 for a Student-t with two
    degrees of freedom), so ``transport_map(method="auto")`` uses the quadrature map for heavy
    tails. A prior whose parameters are traced cannot be checked and counts as heavy.
    """
    leaves = jax.tree_util.tree_leaves(std)
    if any(isinstance(x, jax.core.Tracer) for x in leaves):
        return False
    with jax.ensure_compile_time_eval():
        quart = std.icdf(jnp.asarray([0.25, 0.5, 0.75]))
        med, half_iqr = quart[1], (quart[2] - quart[0]) / 2
        lumped = jnp.maximum(std.cdf(med - _CAP * half_iqr), _priors.sf(std, med + _CAP * half_iqr))
        return bool(lumped < 1e-12)


@half_in_float32("w")
def fft_table(std, w, *, num_grid: int):
    """Edge positions and values of T₀ for one weight vector ``w`` ``[k]`` of the prior ``std``.

    Args:
      std: a standardised prior (any object of the prior protocol).
      w: ``[k]`` weights, not all zero (all-zero weights give the identity).
      num_grid: lattice cells (a power of two is fastest).

    Returns:
      ``(y0, h, t)``: T₀ at the points y0 + j h, j = 0 … num_grid - 1, as ``t`` ``[num_grid]``.
    """
    dtype = w.dtype
    k = w.shape[-1]
    n = num_grid
    quart = std.icdf(jnp.asarray([0.25, 0.5, 0.75], dtype))
    med, half_iqr = quart[1], (quart[2] - quart[0]) / 2
    delta = jnp.asarray(_DELTA, dtype)
    lo = jnp.maximum(std.icdf(delta), med - _CAP * half_iqr) - med  # <= 0
    hi = jnp.minimum(_priors.isf(std, delta), med + _CAP * half_iqr) - med  # >= 0
    lo = jnp.where(jnp.isfinite(lo), lo, -_CAP * half_iqr)
    hi = jnp.where(jnp.isfinite(hi), hi, _CAP * half_iqr)
    # The mass beyond the lattice, lumped into the end cells: 1e-16 for light tails, more where
    # the cap cuts a heavy tail. Tail probabilities not well above it are not trusted.
    lumped = jnp.maximum(std.cdf(med + lo), _priors.sf(std, med + hi))

    # 1. The lattice: term k covers cells (j - below_k) h, j = 0 … below_k + above_k.
    below = jnp.where(w >= 0, -w * lo, -w * hi)
    above = jnp.where(w >= 0, w * hi, w * lo)
    h = jnp.sum(below + above) / (n - 2 * k - 2)
    h = jnp.where(h > 0, h, 1)
    nb = jnp.ceil(below / h)
    top = nb + jnp.ceil(above / h)
    j = jnp.arange(n + 1, dtype=dtype)

    # 2. Cell masses from the CDF at the cell edges (j - nb - 1/2) h.
    edge = (j - nb[:, None] - 0.5) * h  # [k, n + 1], relative to w_k · med
    wk = w[:, None]
    x = med + edge / jnp.where(wk == 0, 1, wk)
    cdf, sf = std.cdf(x), _priors.sf(std, x)
    pos, neg = wk > 0, wk < 0
    g = jnp.where(pos, cdf, jnp.where(neg, sf, (edge >= 0).astype(dtype)))  # P(term <= edge)
    gc = jnp.where(pos, sf, jnp.where(neg, cdf, (edge < 0).astype(dtype)))  # P(term > edge)
    first = j == 0
    past = j > top[:, None]
    g = jnp.where(first, 0, jnp.where(past, 1, g))
    gc = jnp.where(first, 1, jnp.where(past, 0, gc))
    mass = jnp.where(g[:, 1:] <= 0.5, g[:, 1:] - g[:, :-1], gc[:, :-1] - gc[:, 1:])
    mass = jnp.maximum(mass, 0)  # [k, n]

    # 3. The body: F_Y and 1 - F_Y at the right edge of every cell.
    cells = j[:-1]
    # Each term's cell masses sample the density of (term + a uniform on one cell); the product
    # of k terms thus carries k such boxes where the cell masses of Y carry one. Terms wider
    # than a few cells are smooth there, and k - 1 of their boxes are divided out (sinc factors
    # in the spectrum); a term narrower than a cell is a point mass on the lattice, with no box.
    wide = jnp.clip((jnp.abs(w) * half_iqr / h - 2) / 8, 0, 1)
    boxes = jnp.sum(wide) - jnp.max(wide)
    pmf = _convolve(mass, n, _box_factor(jnp.zeros((), dtype), boxes, n))
    cdf_y = _cumsum(pmf)
    sf_y = _cumsum(pmf[::-1])[::-1] - pmf

    # 4. The tails, from tilted lattices joined to the body at F = _JOIN.
    tiny = jnp.finfo(dtype).tiny
    log_mass = jnp.log(jnp.maximum(mass, tiny))
    log_mass = jnp.where(mass > 0, log_mass, -jnp.inf)
    centre = cells - nb[:, None]  # each term's cell index relative to its median
    # The junctions (last cell with 1 - F_Y >= _JOIN, first with F_Y >= _JOIN), and the cells
    # further out (at _SLOPE_AT) where the pmf's log-slope gives the tilt.
    span = _SLOPE_SPAN
    upper = jnp.clip(jnp.argmin(sf_y >= _JOIN) - 1, span, n - 1)
    lower = jnp.clip(jnp.argmax(cdf_y >= _JOIN), 0, n - 1 - span)
    upper_slope = jnp.clip(jnp.argmin(sf_y >= _SLOPE_AT) - 1, upper, n - 1)
    lower_slope = jnp.clip(jnp.argmax(cdf_y >= _SLOPE_AT), 0, lower)
    a_hi = _log_slope(pmf, upper_slope - span, upper_slope)
    a_lo = _log_slope(pmf, lower_slope + span, lower_slope)
    sf_tail, ok_hi = _tilted_tail(log_mass, centre, upper, sf_y[upper], a_hi, boxes, upper=True)
    cdf_tail, ok_lo = _tilted_tail(log_mass, centre, lower, cdf_y[lower], a_lo, boxes, upper=False)
    idx = jnp.arange(n)
    in_hi, in_lo = idx >= upper, idx <= lower
    sf_y = jnp.where(in_hi, sf_tail, sf_y)
    cdf_y = jnp.where(in_lo, cdf_tail, cdf_y)
    ok = jnp.where(in_hi, ok_hi, jnp.where(in_lo, ok_lo, True))

    # 5. The map at the cell edges.
    y0 = med * jnp.sum(w) + (0.5 - jnp.sum(nb)) * h
    y = y0 + cells * h
    t = _priors.quantile_map(std, cdf_y, sf_y)
    trusted = jnp.maximum(_LIGHT_MARGIN * _DELTA, _LUMP_MARGIN * lumped)
    ok = ok & (jnp.minimum(cdf_y, sf_y) > trusted) & jnp.isfinite(t)
    # One nonzero weight w > 0: T₀ is exactly y / w, e.g. at the corners of a grid and at the
    # keyframes of a path; tabulate it exactly rather than through the FFT.
    # (All-zero weights, possible only when traced, give the identity.)
    ws, nonzero = jnp.sum(w), jnp.sum(w != 0)
    single = ((nonzero == 1) & (ws > 0)) | (nonzero == 0)
    exact = y / jnp.where(nonzero == 1, ws, 1)
    t = jnp.where(single, exact, t)
    ok = jnp.where(single, jnp.isfinite(exact), ok)
    t = _cummax(extrapolate_tails(y, t, ok))
    return y0, h, t


def _cumsum(x):
    """Cumulative sum along the last axis, as two small triangular matmuls.

    XLA's CPU cumsum (a reduce-window or an associative scan) costs tens of microseconds per
    row of a few thousand; blocks of 64 summed by a matmul cost a few. The block sums are also
    more accurate than a sequential sum.
    """
    n = x.shape[-1]
    b = 64
    nb = -(-n // b)
    xp = jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, nb * b - n)])
    blocks = xp.reshape(*x.shape[:-1], nb, b)
    within = blocks @ jnp.triu(jnp.ones((b, b), x.dtype))
    offsets = within[..., -1] @ jnp.triu(jnp.ones((nb, nb), x.dtype), 1)
    return (within + offsets[..., None]).reshape(*x.shape[:-1], nb * b)[..., :n]


def _cummax(x):
    """Running maximum of a vector, blockwise (cheaper to compile and run than a scan)."""
    n = x.shape[0]
    b = 32
    nb = -(-n // b)
    blocks = jnp.pad(x, (0, nb * b - n), constant_values=-jnp.inf).reshape(nb, b)
    tri = jnp.tril(jnp.ones((b, b), bool))
    within = jnp.max(jnp.where(tri, blocks[:, None, :], -jnp.inf), axis=-1)
    before = jnp.tril(jnp.ones((nb, nb), bool), -1)
    prefix = jnp.max(jnp.where(before, within[None, :, -1], -jnp.inf), axis=-1)
    return jnp.maximum(within, prefix[:, None]).reshape(-1)[:n]


def _box_factor(tilt, boxes, n):
    """The spectral factor that divides ``boxes`` one-cell uniform laws out of a lattice pmf.

    A box tilted by e^{tilt · x} (x in cells) has the transform sinh(z) / z with
    z = (tilt - iω) / 2; untilted, that is sinc(ω / 2π).
    """
    omega = (2 * math.pi / n) * jnp.arange(n // 2 + 1, dtype=tilt.dtype)
    z = jax.lax.complex(jnp.broadcast_to(tilt / 2, omega.shape), -omega / 2)
    small = jnp.abs(z) < 1e-4
    safe = jnp.where(small, jnp.ones_like(z), z)
    sinhc = jnp.where(small, jnp.ones_like(z), jnp.sinh(safe) / safe)
    return jnp.exp(-boxes.astype(z.dtype) * jnp.log(sinhc))


def _convolve(mass, n, factor):
    """The pmf ``[n]`` of the sum of terms with lattice masses ``mass`` ``[k, n]``, its spectrum
    multiplied by ``factor``."""
    spectrum = jnp.prod(jnp.fft.rfft(mass, axis=-1), axis=0)
    spectrum = spectrum * factor.astype(spectrum.dtype)
    return jnp.fft.irfft(spectrum, n=n).astype(mass.dtype)


def _log_slope(pmf, inner, outer):
    """The pmf's decay rate per cell from cell ``inner`` to ``outer`` (>= 0; 0 if undefined)."""
    tiny = jnp.finfo(pmf.dtype).tiny
    cells = jnp.maximum(jnp.abs(outer - inner), 1).astype(pmf.dtype)
    rate = jnp.log(jnp.maximum(pmf[inner], tiny) / jnp.maximum(pmf[outer], tiny)) / cells
    return jnp.maximum(jnp.where(jnp.isfinite(rate), rate, 0), 0)


def _tilted_tail(log_mass, centre, join, value, alpha, boxes, *, upper: bool):
    """One tail of F_Y at every cell edge beyond ``join``, by an exponentially tilted FFT.

    Args:
      log_mass: the terms' log cell masses ``[k, n]``.
      centre: each term's cell index relative to its own median, ``[k, n]``.
      join: the cell where the tail is joined to the body.
      value: the body's tail probability at ``join`` (1 - F_Y for the upper tail, else F_Y).
      alpha: the tilt per cell (>= 0), towards the tail.
      boxes: how many one-cell boxes to divide out (see :func:`fft_table`).
      upper: which tail.

    Returns:
      ``(tail, ok)``: the tail probability ``[n]`` at the right edge of every cell (valid beyond
      ``join``), and where it is resolved.
    """
    n = log_mass.shape[-1]
    dtype = log_mass.dtype
    tilt = alpha if upper else -alpha
    tilted = log_mass + tilt * centre
    top = jnp.max(tilted, axis=-1, keepdims=True)
    q = jnp.maximum(_convolve(jnp.exp(tilted - top), n, _box_factor(tilt, boxes, n)), 0)
    # Undo the tilt relative to the junction (factors <= 1 on the tail's side), then sum the tail.
    idx = jnp.arange(n)
    side = idx > join if upper else idx <= join
    dist = jnp.where(side, jnp.abs(idx - join), 0).astype(dtype)
    r = jnp.where(side, q * jnp.exp(-alpha * dist), 0)
    if upper:
        tail_r = _cumsum(r[::-1])[::-1] - r  # Σ over the cells after j
        q_beyond = _cumsum(q[::-1])[::-1] - q
    else:
        tail_r = _cumsum(r)  # Σ over the cells up to j
        q_beyond = _cumsum(q)
    ref = tail_r[join]
    tail = value * tail_r / jnp.where(ref > 0, ref, 1)
    # Trust the tilted tail while the tilted mass beyond is well above the FFT's rounding.
    ok = q_beyond > _TAIL_RESOLVED * jnp.sum(q)
    return tail, ok


def extrapolate_tails(y, t, ok, *, span: int = 8):
    """Continues T linearly beyond the grid points ``ok`` where the tails are resolved.

    Past them F_Y underflows (or the quadrature has no nodes, or a prior without ``isf`` meets
    icdf(1) = inf), and F_Z⁻¹ would flatten T or make it infinite; the linear continuation is
    T's asymptotic shape for the priors here (exact for the stable ones, and the slope 1/max|w|
    of exponential tails).
    """
    n = y.shape[0]
    lo = jnp.clip(jnp.argmax(ok), 0, n - 1 - span)
    hi = jnp.clip(n - 1 - jnp.argmax(ok[::-1]), span, n - 1)
    s_lo = jnp.maximum((t[lo + span] - t[lo]) / (y[lo + span] - y[lo]), 0)
    s_hi = jnp.maximum((t[hi] - t[hi - span]) / (y[hi] - y[hi - span]), 0)
    idx = jnp.arange(n)
    t = jnp.where(idx < lo, t[lo] + s_lo * (y - y[lo]), t)
    return jnp.where(idx > hi, t[hi] + s_hi * (y - y[hi]), t)
