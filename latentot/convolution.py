"""Fast numerical transport maps: the law of Y = Σ_k w_k Z_k by FFT convolution on a lattice.

:func:`fft_table` tabulates T₀ = F_Z⁻¹ ∘ F_Y for one weight vector of a standardised prior in a
fixed number of FFTs, using nothing but the prior's ``cdf``/``icdf`` (and ``sf``/``isf`` when it
has them). The steps:

1. **Lattice.** Every term w_k (Z_k - m) (m the prior's median) is put on one lattice of spacing
   h, its cells centred on multiples of h. Each term reaches from the prior's δ = 1e-12 quantiles
   (at most ``cap`` = 40 half-interquartile ranges from the median, which only heavy tails reach)
   scaled by |w_k|; h is chosen so that all terms together fill ``num_grid`` cells.
2. **Cell masses.** The mass of each cell is a difference of the prior's CDF at its edges (of
   the survival function in the upper half, so both tails keep their relative precision); the
   mass beyond a term's extent is lumped into its end cells. Cell masses are exact for any prior,
   discontinuous densities (uniform) and narrow terms (small |w_k|, a near point mass) included.
3. **Convolution.** The pmf of the sum is the product of the terms' real FFTs. The lattice holds
   the whole support of the sum, so the circular convolution does not wrap. The cumulative sums of
   the pmf give F_Y and 1 - F_Y at the cell edges.
4. **Tails.** An FFT's rounding error is relative to the largest pmf value, so F_Y below about
   1e-4 (float32) is swamped. Each tail is therefore computed again from an exponentially tilted
   lattice (Esscher transform; Grübel and Hermesmeier, 1999): every term's masses are multiplied by
   e^{±α j}, which moves the bulk of the sum into that tail, where the FFT then resolves the pmf
   to full relative precision; the tilt is divided out again and the tail is joined to the body
   at F = 10⁻³. α is the pmf's own log-slope there, so the tilted pmf peaks at the junction.
5. **Map.** T₀ = F_Z⁻¹(F_Y) at every cell edge (through ``icdf`` in the lower half and ``isf``
   in the upper half), continued linearly where even the tilted tail underflows or the lattice
   ends, and made monotone. Between edges T₀ is interpolated linearly.

The cost is 3 (k + 1) FFTs of length ``num_grid`` and 2 k ``num_grid`` CDF evaluations per weight
vector, independent of the prior; batches of weight vectors are built with ``jax.vmap``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from latentot import priors as _priors

__all__ = ["extrapolate_tails", "fft_table"]

_DELTA = 1e-12  # each term's lattice reaches its δ and 1 - δ quantiles (light tails)
_CAP = 40.0  # ... but at most this many half-interquartile ranges from the median (heavy tails)
_JOIN = 1e-3  # tail probability where the tilted tails take over from the untilted body
_TAIL_RESOLVED = 1e-5  # a tilted tail is trusted while its own tilted mass beyond is above this
_LUMP_MARGIN = 10.0  # tail probabilities below this many lumped masses are extrapolated
_SLOPE_SPAN = 8  # cells over which the pmf's log-slope at the junction is measured


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
    # The mass beyond the lattice, lumped into the end cells: 1e-12 for light tails, more where
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
    freq = jnp.arange(n // 2 + 1, dtype=dtype) / n
    deconv = jnp.sinc(freq) ** -boxes
    pmf = _convolve(mass, n, deconv)
    cdf_y = _cumsum(pmf)
    sf_y = _cumsum(pmf[::-1])[::-1] - pmf

    # 4. The tails, from tilted lattices joined to the body at F = _JOIN.
    tiny = jnp.finfo(dtype).tiny
    log_mass = jnp.log(jnp.maximum(mass, tiny))
    log_mass = jnp.where(mass > 0, log_mass, -jnp.inf)
    centre = cells - nb[:, None]  # each term's cell index relative to its median
    upper = jnp.maximum(jnp.argmin(sf_y >= _JOIN) - 1, _SLOPE_SPAN)  # last cell with S >= JOIN
    lower = jnp.minimum(jnp.argmax(cdf_y >= _JOIN), n - 1 - _SLOPE_SPAN)
    sf_tail, ok_hi = _tilted_tail(
        pmf, log_mass, centre, cells, upper, sf_y[upper], deconv, upper=True
    )
    cdf_tail, ok_lo = _tilted_tail(
        pmf, log_mass, centre, cells, lower, cdf_y[lower], deconv, upper=False
    )
    idx = jnp.arange(n)
    in_hi, in_lo = idx >= upper, idx <= lower
    sf_y = jnp.where(in_hi, sf_tail, sf_y)
    cdf_y = jnp.where(in_lo, cdf_tail, cdf_y)
    ok = jnp.where(in_hi, ok_hi, jnp.where(in_lo, ok_lo, True))

    # 5. The map at the cell edges.
    y0 = med * jnp.sum(w) + (0.5 - jnp.sum(nb)) * h
    y = y0 + cells * h
    t = _priors.quantile_map(std, cdf_y, sf_y)
    ok = ok & (jnp.minimum(cdf_y, sf_y) > _LUMP_MARGIN * lumped) & jnp.isfinite(t)
    # One nonzero weight w > 0: T₀ is exactly y / w, e.g. at the corners of a grid and at the
    # keyframes of a path; tabulate it exactly rather than through the FFT.
    # (All-zero weights, possible only when traced, give the identity.)
    ws, nonzero = jnp.sum(w), jnp.sum(w != 0)
    single = ((nonzero == 1) & (ws > 0)) | (nonzero == 0)
    exact = y / jnp.where(nonzero == 1, ws, 1)
    t = jnp.where(single, exact, t)
    ok = jnp.where(single, jnp.isfinite(exact), ok)
    t = jax.lax.associative_scan(jnp.maximum, extrapolate_tails(y, t, ok))
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


def _convolve(mass, n, factor):
    """The pmf ``[n]`` of the sum of terms with lattice masses ``mass`` ``[k, n]``, its spectrum
    multiplied by ``factor``."""
    spectrum = jnp.prod(jnp.fft.rfft(mass, axis=-1), axis=0)
    spectrum = spectrum * factor.astype(spectrum.dtype)
    return jnp.fft.irfft(spectrum, n=n).astype(mass.dtype)


def _tilted_tail(pmf, log_mass, centre, cells, join, value, deconv, *, upper: bool):
    """One tail of F_Y at every cell edge beyond ``join``, by an exponentially tilted FFT.

    Args:
      pmf: the untilted pmf ``[n]``; its log-slope at ``join`` gives the tilt.
      log_mass: the terms' log cell masses ``[k, n]``.
      centre: each term's cell index relative to its own median, ``[k, n]``.
      cells: ``0 … n - 1``.
      join: the cell where the tail is joined to the body.
      value: the body's tail probability at ``join`` (1 - F_Y for the upper tail, else F_Y).
      deconv: the spectral factor of the body's convolution.
      upper: which tail.

    Returns:
      ``(tail, ok)``: the tail probability ``[n]`` at the right edge of every cell (valid beyond
      ``join``), and where it is resolved.
    """
    n = pmf.shape[0]
    tiny = jnp.finfo(pmf.dtype).tiny
    inner = pmf[join - _SLOPE_SPAN] if upper else pmf[join + _SLOPE_SPAN]
    alpha = jnp.log(jnp.maximum(inner, tiny) / jnp.maximum(pmf[join], tiny)) / _SLOPE_SPAN
    alpha = jnp.maximum(jnp.where(jnp.isfinite(alpha), alpha, 0), 0)
    sign = 1 if upper else -1
    tilted = log_mass + (sign * alpha) * centre
    top = jnp.max(tilted, axis=-1, keepdims=True)
    q = jnp.maximum(_convolve(jnp.exp(tilted - top), n, deconv), 0)
    # Undo the tilt relative to the junction (factors <= 1 on the tail's side), then sum the tail.
    idx = jnp.arange(n)
    side = idx > join if upper else idx <= join
    dist = jnp.where(side, jnp.abs(idx - join), 0).astype(pmf.dtype)
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
