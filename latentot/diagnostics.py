"""Distribution-mismatch diagnostics and the papers' figures.

Statistics (jnp, jit-friendly):

* :func:`ks_distance`: Kolmogorov-Smirnov statistic of all components of a sample against a
  prior's CDF; :func:`ks_distance_cdf` for any CDF.
* :func:`norm_stats`: mean and variance of ‖z‖ and ‖z‖² over a sample; :func:`chi_moments`:
  the exact mean and variance of the chi law (‖z‖ for a standard Gaussian z ∈ R^d);
  :func:`norm_ks`: KS statistic of the sample's norms against the exact norm law of an isotropic
  prior (the chi law for the Gaussian) or Leśniak's Observation 2.1 normal approximation
  (:func:`latentot.norms.norm_law`).
* :func:`mismatch_report`: KS and norm statistics of linear, spherical and matched midpoints, as
  plain Python floats.

Figure data (pure functions, ``rng`` first) and plots (matplotlib, imported lazily: install the
``plots`` extra; each plot function returns a ``matplotlib.figure.Figure`` and works with the Agg
backend):

* Agustsson et al. Fig. 1, 2-D uniform prior midpoints: :func:`fig1_data`, :func:`plot_fig1`.
* Agustsson et al. Fig. 2, squared norms of midpoints in d = 100: :func:`fig2_data`,
  :func:`plot_fig2`.
* Agustsson et al. Fig. 3, the monotone maps T_t: :func:`fig3_data`, :func:`plot_fig3`.
* Leśniak et al. Fig. 1, norms with increasing dimension: :func:`norm_distribution_data`,
  :func:`plot_norm_distribution`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy import special

from latentot import _checks, norms, ops
from latentot import priors as _priors
from latentot._promotion import half_in_float32
from latentot.matching import matched_lerp
from latentot.transport import transport_map

__all__ = [
    "MismatchReport",
    "NormStats",
    "chi_moments",
    "fig1_data",
    "fig2_data",
    "fig3_data",
    "ks_distance",
    "ks_distance_cdf",
    "midpoints",
    "mismatch_report",
    "norm_distribution_data",
    "norm_ks",
    "norm_stats",
    "plot_fig1",
    "plot_fig2",
    "plot_fig3",
    "plot_norm_distribution",
]

METHODS = ("linear", "slerp", "matched")


# --------------------------------------------------------------------------------------------
# Statistics.


@half_in_float32("sample")
def ks_distance_cdf(sample, cdf) -> jax.Array:
    """Kolmogorov-Smirnov statistic ``sup_x |F_n(x) - F(x)|`` of all entries of ``sample``.

    Args:
      sample: any shape; all entries are pooled (flattened).
      cdf: the reference CDF, a function acting element-wise on an array.

    Returns:
      A scalar in [0, 1] of the sample's dtype.
    """
    return _ks_sorted(_sorted(sample), cdf)


def _flat(sample) -> jax.Array:
    x = _checks.as_float("sample", sample).ravel()
    if x.shape[0] == 0:
        raise ValueError("sample must not be empty")
    return x


def _sorted(sample) -> jax.Array:
    """All entries of ``sample``, sorted on the device they live on (``jnp.sort``)."""
    return jnp.sort(_flat(sample))


def _ks_sorted(x, cdf):
    n = x.shape[0]
    f = jnp.asarray(cdf(x)).astype(x.dtype)
    i = jnp.arange(1, n + 1, dtype=x.dtype)
    d_plus = jnp.max(i / n - f)
    d_minus = jnp.max(f - (i - 1) / n)
    return jnp.maximum(d_plus, d_minus)


@half_in_float32("sample")
def ks_distance(sample, prior) -> jax.Array:
    """KS statistic of all components of ``sample`` against the prior's component CDF.

    Args:
      sample: ``[..., d]`` (any shape); every entry is treated as one draw of a component.
      prior: the latent prior (its ``cdf`` is used).

    Returns:
      A scalar: ``sup_x |F_n(x) - F_Z(x)|``. For n i.i.d. draws from the prior it is about
      0.87/√n on average (Kolmogorov); a mismatched sample gives a value that does not shrink
      with n.
    """
    _checks.check_prior(prior)
    x = _flat(sample)
    if _is_pytree(prior):
        return _ks_prior_jit(x, prior)
    return _ks_prior(x, prior)


def _ks_prior(x, prior):
    return _ks_sorted(jnp.sort(x), prior.cdf)


_ks_prior_jit = jax.jit(_ks_prior)


def _is_pytree(prior) -> bool:
    """Whether ``prior`` can be a ``jax.jit`` argument (a registered pytree, e.g. a dataclass)."""
    leaves = jax.tree_util.tree_leaves(prior)
    return not (len(leaves) == 1 and leaves[0] is prior)


# Observation 2.1 by quadrature: about a hundred small ops, so compile it once per prior type.
_norm_law = jax.jit(norms.norm_law, static_argnums=(1, 2))


class NormStats(NamedTuple):
    """Mean and variance of ‖z‖ and of ‖z‖² over a sample (scalars)."""

    mean_norm: jax.Array
    var_norm: jax.Array
    mean_sq_norm: jax.Array
    var_sq_norm: jax.Array


@half_in_float32("z")
def norm_stats(z, *, loc=0.0, axis=-1) -> NormStats:
    """Sample moments of the Euclidean norm of latent vectors.

    Args:
      z: ``[..., d]`` latent vectors (the last axis is the latent dimension), or any shape with
        the latent axes given by ``axis``.
      loc: centre subtracted before taking norms (scalar, or broadcasting against z).
      axis: the latent axes the norm is taken over (an int or a tuple; default the last axis),
        e.g. ``(1, 2, 3)`` for image latents ``[B, C, H, W]``.

    Returns:
      :class:`NormStats` of ‖z - loc‖ over the other axes (unbiased variances).
    """
    z = _checks.latent("z", z)
    (x,), _ = _checks.flatten_latent(("z",), (z - jnp.asarray(loc, z.dtype),), axis)
    sq = jnp.sum(x * x, -1).ravel()
    r = jnp.sqrt(sq)
    ddof = 1 if sq.shape[0] > 1 else 0
    return NormStats(jnp.mean(r), jnp.var(r, ddof=ddof), jnp.mean(sq), jnp.var(sq, ddof=ddof))


def chi_moments(dim: int, dtype=None) -> tuple[jax.Array, jax.Array]:
    """Exact mean and variance of the chi law with ``dim`` degrees of freedom.

    E‖z‖ = √2 Γ((d+1)/2) / Γ(d/2) and Var‖z‖ = d - (E‖z‖)² for z ~ N(0, I_d). The variance
    tends to 1/2 as d grows (Leśniak's Observation 2.1 with the correct constant).

    Args:
      dim: latent dimension d >= 1.
      dtype: result dtype (default float).

    Returns:
      ``(mean, variance)``, scalars.
    """
    dim = _checks.check_positive_int("dim", dim)
    dtype = dtype or jnp.result_type(float)
    # The ratio of gammas in float64 NumPy-free form: exp(lgamma((d+1)/2) - lgamma(d/2)).
    log_ratio = math.lgamma((dim + 1) / 2) - math.lgamma(dim / 2)
    mean = math.sqrt(2.0) * math.exp(log_ratio)
    # d - mean² cancels for large d; use the exact identity Var = d - mean² in float64.
    var = dim - mean * mean
    return jnp.asarray(mean, dtype), jnp.asarray(var, dtype)


@half_in_float32("z")
def norm_ks(z, prior, *, law: str = "auto", axis=-1) -> jax.Array:
    """KS statistic of the norms ‖z - loc‖ against the norm law of the prior.

    Args:
      z: ``[..., d]`` latent vectors, or any shape with the latent axes given by ``axis``.
      prior: the latent prior.
      law: ``"exact"``: the prior's own ``norm_cdf(r, d)`` (the chi law for the Gaussian);
        ``"approx"``: the normal approximation of Leśniak's Observation 2.1
        (:func:`latentot.norms.norm_law`); ``"auto"``: exact when the prior has ``norm_cdf``.
      axis: the latent axes the norm is taken over (an int or a tuple; default the last axis);
        d is the product of their sizes (16,384 for ``[B, 4, 64, 64]`` noise with
        ``axis=(1, 2, 3)``). The prior's loc must be a scalar or ``[d]`` of the flattened latent.

    Returns:
      A scalar KS statistic over the norms of the other axes.
    """
    _checks.check_prior(prior)
    if law not in ("auto", "exact", "approx"):
        raise ValueError(f"law must be 'auto', 'exact' or 'approx', got {law!r}")
    (z,), _ = _checks.flatten_latent(("z",), (z,), axis)
    has_exact = callable(getattr(prior, "norm_cdf", None))
    if law == "exact" and not has_exact:
        raise ValueError(f"{type(prior).__name__} has no exact norm law (norm_cdf)")
    exact = law == "exact" or (law == "auto" and has_exact)
    centred = None if exact else _centred(prior)
    if _is_pytree(prior) and (centred is None or _is_pytree(centred)):
        return _norm_ks_jit(z, prior, centred, exact)
    return _norm_ks(z, prior, centred, exact)


def _norm_ks(z, prior, centred, exact):
    dim = z.shape[-1]
    x = z - jnp.asarray(getattr(prior, "loc", 0.0), z.dtype)
    r = jnp.sqrt(jnp.sum(x * x, -1))
    if exact:
        return ks_distance_cdf(r, lambda s: prior.norm_cdf(s, dim))
    mean, var = norms.norm_law(centred, dim, z.dtype)
    return ks_distance_cdf(r, lambda s: special.ndtr((s - mean) / jnp.sqrt(var)))


_norm_ks_jit = jax.jit(_norm_ks, static_argnums=3)


def _centred(prior):
    """The prior shifted to location 0, for the moments of ‖z - loc‖ (Observation 2.1).

    Only ``icdf``/``isf`` are needed by :func:`latentot.norms.norm_law`. A per-component
    (array) loc is not supported there: the components must be identically distributed.
    """
    loc = getattr(prior, "loc", 0.0)
    arr = _checks.concrete(loc)
    if arr is not None and np.all(arr == 0):
        return prior
    if jnp.ndim(loc):
        raise ValueError("the Observation 2.1 norm law needs a scalar prior loc")
    return _Shifted(prior, loc)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class _Shifted:
    """Z - loc for a prior Z (the part of the prior protocol used by quadrature)."""

    base: Any
    loc: Any

    def sample(self, rng, shape, dtype=None):
        x = self.base.sample(rng, shape, dtype)
        return x - jnp.asarray(self.loc, x.dtype)

    def log_prob(self, x):
        x = _checks.as_float("x", x)
        return self.base.log_prob(x + jnp.asarray(self.loc, x.dtype))

    def cdf(self, x):
        x = _checks.as_float("x", x)
        return self.base.cdf(x + jnp.asarray(self.loc, x.dtype))

    def icdf(self, u):
        q = self.base.icdf(u)
        return q - jnp.asarray(self.loc, q.dtype)

    def isf(self, u):
        q = _priors.isf(self.base, u)
        return q - jnp.asarray(self.loc, q.dtype)


# --------------------------------------------------------------------------------------------
# Midpoints and the mismatch report.


def midpoints(rng: jax.Array, prior, *, dim: int, n: int, t=0.5, dtype=None) -> dict:
    """Prior samples and the linear, spherical and matched interpolants of independent pairs.

    Args:
      rng: PRNG key.
      prior: the latent prior.
      dim: latent dimension d.
      n: number of pairs.
      t: interpolation coefficient in [0, 1] (0.5: midpoints).
      dtype: sample dtype (default float).

    Returns:
      ``{"prior", "linear", "slerp", "matched"}`` → ``[n, d]`` arrays. ``"prior"`` holds the
      first point of each pair.
    """
    _checks.check_prior(prior)
    dim = _checks.check_positive_int("dim", dim)
    n = _checks.check_positive_int("n", n)
    _checks.check_range("t", t, low=0.0, high=1.0)
    dtype = _priors._default_dtype(dtype)
    fn = _midpoints_jit if _is_pytree(prior) else _midpoints
    out = fn(rng, prior, dim, n, jnp.asarray(t, dtype), dtype)
    return {k: out[k] for k in ("prior", *METHODS)}  # jit returns dicts with sorted keys


def _midpoints(rng, prior, dim, n, t, dtype):
    z = prior.sample(rng, (2, n, dim), dtype)
    z0, z1 = z[0], z[1]
    return {
        "prior": z0,
        "linear": ops.lerp(z0, z1, t),
        "slerp": ops.slerp(z0, z1, t),
        "matched": matched_lerp(prior, z0, z1, t),
    }


_midpoints_jit = jax.jit(_midpoints, static_argnums=(2, 3, 5))


@dataclasses.dataclass(frozen=True)
class MismatchReport:
    """Mismatch statistics of interpolants, as plain Python floats.

    Attributes:
      prior: the prior's class name.
      dim: latent dimension.
      n: number of pairs.
      t: interpolation coefficient.
      rows: ``{"prior" | "linear" | "slerp" | "matched": {statistic: value}}`` with the
        statistics ``ks`` (components against the prior's CDF), ``norm_ks`` (norms against the
        prior's norm law), ``mean_norm``, ``var_norm``, ``mean_sq_norm``, ``var_sq_norm``.
      norm_law: Observation 2.1's ``(mean, variance)`` of ‖z‖ (inf when Var Z² diverges).
    """

    prior: str
    dim: int
    n: int
    t: float
    rows: dict[str, dict[str, float]]
    norm_law: tuple[float, float]

    def as_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return dataclasses.asdict(self)

    def format(self) -> str:
        """A fixed-width text table, one row per sample kind."""
        keys = ("ks", "norm_ks", "mean_norm", "var_norm", "mean_sq_norm", "var_sq_norm")
        head = f"{self.prior} prior, d = {self.dim}, n = {self.n}, t = {self.t:g}"
        law = f"Obs. 2.1 norm law: mean {self.norm_law[0]:.4g}, variance {self.norm_law[1]:.4g}"
        lines = [head, law, f"{'':8s}" + "".join(f"{k:>14s}" for k in keys)]
        for name, row in self.rows.items():
            lines.append(f"{name:8s}" + "".join(f"{row[k]:14.5g}" for k in keys))
        return "\n".join(lines)


def mismatch_report(
    rng: jax.Array, prior, dim: int, n: int, *, t: float = 0.5, dtype=None
) -> MismatchReport:
    """KS and norm statistics of linear, SLERP and matched interpolants against the prior.

    Args:
      rng: PRNG key.
      prior: the latent prior.
      dim: latent dimension d.
      n: number of independent pairs.
      t: interpolation coefficient (default: midpoints).
      dtype: sample dtype (default float).

    Returns:
      A :class:`MismatchReport` of Python floats.
    """
    data = midpoints(rng, prior, dim=dim, n=n, t=t, dtype=dtype)
    loc = getattr(prior, "loc", 0.0)
    law = "exact" if callable(getattr(prior, "norm_cdf", None)) else "approx"
    nl_mean, nl_var = _norm_law(_centred(prior), dim, None)
    finite_law = bool(np.isfinite(float(nl_var)))
    rows = {}
    for name, z in data.items():
        stats = norm_stats(z, loc=jnp.asarray(loc, z.dtype))
        row = {"ks": float(ks_distance(z, prior))}
        row["norm_ks"] = float(norm_ks(z, prior, law=law)) if finite_law else math.nan
        row.update({k: float(v) for k, v in stats._asdict().items()})
        rows[name] = row
    return MismatchReport(
        prior=type(prior).__name__,
        dim=int(dim),
        n=int(n),
        t=float(t),
        rows=rows,
        norm_law=(float(nl_mean), float(nl_var)),
    )


# --------------------------------------------------------------------------------------------
# Figure data.


def fig1_data(rng: jax.Array, *, n: int = 1_000_000, prior=None, t=0.5, dtype=None) -> dict:
    """Agustsson et al. Fig. 1: 2-D midpoints of a uniform prior.

    Linear midpoints pile up in a pyramid, SLERP midpoints form a ring with a hole at the
    origin, and matched midpoints are uniform again.

    Args:
      rng: PRNG key.
      n: number of pairs (the paper: 10⁶).
      prior: the prior (default ``Uniform(-1, 1)``).
      t: interpolation coefficient (default 0.5).
      dtype: sample dtype.

    Returns:
      ``{"prior", "linear", "slerp", "matched"}`` → ``[n, 2]``.
    """
    prior = _priors.Uniform() if prior is None else prior
    return midpoints(rng, prior, dim=2, n=n, t=t, dtype=dtype)


def fig2_data(rng: jax.Array, prior, *, dim: int = 100, n: int = 100_000, t=0.5, dtype=None):
    """Agustsson et al. Fig. 2: squared norms ‖y‖² of midpoints in d = 100.

    Uniform(-1, 1): E‖z‖² = d/3 ≈ 33.3 for prior samples and matched midpoints, d/6 ≈ 16.7 for
    linear ones; Gaussian: 100 and 50.

    Args:
      rng: PRNG key.
      prior: the latent prior.
      dim: latent dimension.
      n: number of pairs (the paper: 10⁶).
      t: interpolation coefficient.
      dtype: sample dtype.

    Returns:
      ``{"prior", "linear", "slerp", "matched"}`` → ``[n]`` squared norms about the prior's loc.
    """
    data = midpoints(rng, prior, dim=dim, n=n, t=t, dtype=dtype)
    out = {}
    for name, z in data.items():
        x = z - jnp.asarray(getattr(prior, "loc", 0.0), z.dtype)
        out[name] = jnp.sum(x * x, -1)
    return out


def fig3_data(prior, *, ts: Sequence[float] = (0.05, 0.25, 0.5), y=None, num: int = 201):
    """Agustsson et al. Fig. 3: the monotone maps T_t of linear interpolation.

    Args:
      prior: the latent prior (the paper: Uniform(-1, 1)).
      ts: interpolation coefficients.
      y: ``[m]`` points at which to evaluate the maps; default ``num`` points spanning the
        prior's support (or its 0.1%-99.9% quantile range for unbounded priors).
      num: number of default points.

    Returns:
      ``{"y": [m], "t": [len(ts)], "maps": [len(ts), m]}`` with ``maps[i] = T_{ts[i]}(y)``.
    """
    _checks.check_prior(prior)
    ts = _checks.as_float("ts", ts)
    if ts.ndim != 1 or ts.shape[0] == 0:
        raise ValueError(f"ts must be a non-empty 1-D sequence, got shape {ts.shape}")
    _checks.check_range("ts", ts, low=0.0, high=1.0)
    dtype = ts.dtype
    if y is None:
        num = _checks.check_positive_int("num", num, minimum=2)
        low, high = _priors.support(prior)
        if not (np.isfinite(np.asarray(low)).all() and np.isfinite(np.asarray(high)).all()):
            low = prior.icdf(jnp.asarray(1e-3, dtype))
            high = _priors.isf(prior, jnp.asarray(1e-3, dtype))
        y = jnp.linspace(jnp.asarray(low, dtype), jnp.asarray(high, dtype), num)
    y = _checks.as_float("y", y)
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D [m], got shape {y.shape}")
    y = y.astype(dtype)
    T = transport_map(prior, ops.lerp_weights(ts))
    maps = T(jnp.broadcast_to(y, (ts.shape[0], y.shape[0])))
    return {"y": y, "t": ts, "maps": maps}


def norm_distribution_data(
    rng: jax.Array,
    priors: Mapping[str, Any] | Sequence[Any],
    dims: Sequence[int],
    *,
    n: int = 10_000,
    num: int = 200,
    dtype=None,
) -> dict:
    """Leśniak et al. Fig. 1: norms of prior samples for increasing dimension.

    For every prior and dimension: ``n`` sampled norms ‖z - loc‖, the normal approximation
    N(√(d μ₂), σ₂²/(4 μ₂)) of Observation 2.1 (infinite for priors without a finite fourth
    moment, e.g. the Cauchy), its density on a grid, and, where the prior has an exact norm law
    (the chi law for the Gaussian), the exact density.

    Args:
      rng: PRNG key.
      priors: ``{name: prior}`` or a sequence of priors (named by class).
      dims: latent dimensions.
      n: samples per (prior, dim) (the paper: 10,000).
      num: grid points of the densities.
      dtype: sample dtype.

    Returns:
      ``{name: {dim: {"norms": [n], "approx_mean", "approx_var": scalars, "r": [num],
      "approx_pdf": [num], "exact_pdf": [num] or None}}}``. The grid ``r`` spans the sampled
      norms' 0.5%-99.5% quantiles.
    """
    if not isinstance(priors, Mapping):
        priors = {type(p).__name__: p for p in priors}
    n = _checks.check_positive_int("n", n)
    num = _checks.check_positive_int("num", num, minimum=2)
    dims = [_checks.check_positive_int("dims", d) for d in dims]
    out: dict = {}
    keys = jax.random.split(rng, len(priors) * len(dims))
    dtype = _priors._default_dtype(dtype)
    for i, (name, prior) in enumerate(priors.items()):
        _checks.check_prior(prior)
        centred = _centred(prior)
        fn = _norm_record_jit if _is_pytree(prior) and _is_pytree(centred) else _norm_record
        out[name] = {}
        for j, d in enumerate(dims):
            out[name][d] = fn(keys[i * len(dims) + j], prior, centred, d, n, num, dtype)
    return out


def _norm_record(rng, prior, centred, d, n, num, dtype):
    z = prior.sample(rng, (n, d), dtype)
    x = z - jnp.asarray(getattr(prior, "loc", 0.0), z.dtype)
    r = jnp.sqrt(jnp.sum(x * x, -1))
    mean, var = norms.norm_law(centred, d, z.dtype)
    lo, hi = jnp.quantile(r, jnp.asarray([0.005, 0.995], r.dtype))
    grid = jnp.linspace(lo, hi, num)
    sd = jnp.sqrt(var)
    approx_pdf = jnp.exp(-0.5 * ((grid - mean) / sd) ** 2) / (sd * math.sqrt(2 * math.pi))
    approx_pdf = jnp.where(jnp.isfinite(approx_pdf), approx_pdf, 0.0).astype(r.dtype)
    exact_pdf = None
    if callable(getattr(prior, "norm_cdf", None)):
        # The density of ‖z‖ is the derivative of the prior's exact norm CDF.
        exact_pdf = jax.vmap(jax.grad(lambda s: prior.norm_cdf(s, d)))(grid)
    return {
        "norms": r,
        "approx_mean": mean,
        "approx_var": var,
        "r": grid,
        "approx_pdf": approx_pdf,
        "exact_pdf": exact_pdf,
    }


_norm_record_jit = jax.jit(_norm_record, static_argnums=(3, 4, 5, 6))


# --------------------------------------------------------------------------------------------
# Plots (matplotlib imported lazily: the ``plots`` extra).


def _figure(nrows, ncols, *, size=3.0):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size * ncols, size * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


_TITLES = {"prior": "prior", "linear": "linear", "slerp": "SLERP", "matched": "matched"}


def _bulk_halfwidth(deviations: np.ndarray) -> float:
    """Half-width of an axis that shows the bulk of a sample: min(q99, 5·q75) of ``|x - c|``.

    For light tails this is the 99th percentile; for heavy tails (a Cauchy prior's q99 is 26
    times its q75) it stops at five times the upper quartile, so the body stays visible.
    """
    q75, q99 = np.quantile(deviations, [0.75, 0.99])
    width = float(min(q99, 5.0 * q75))
    return width if width > 0 else float(np.max(deviations)) or 1.0


def _heavy_tailed(deviations: np.ndarray) -> bool:
    """Whether :func:`_bulk_halfwidth` had to stop at 5·q75 (q99 > 5·q75: not Laplace, Cauchy)."""
    q75, q99 = np.quantile(deviations, [0.75, 0.99])
    return bool(q99 > 5.0 * q75)


def _outside_note(share: float) -> str:
    return f"{100 * share:.1f}% of points beyond the axes" if share >= 0.0005 else ""


def plot_fig1(data: Mapping[str, Any], *, bins: int = 100, title: str | None = None):
    """2-D histograms of Agustsson Fig. 1 (``data`` from :func:`fig1_data`); returns a Figure.

    All panels share one square window centred on the prior samples' median, of half-width
    min(q99, 5·q75) of the prior samples' ``|z - median|`` (5% padding), so the body of every
    prior is visible. For a bounded prior (uniform) that is its support. Points outside the
    window are left out, and each panel's title says which share of them.

    Args:
      data: ``{"prior", "linear", "slerp", "matched"}`` → ``[n, 2]``; ``"prior"`` sets the
        window (without it, the first entry does).
      bins: histogram bins per axis.
      title: figure title (default: a generic one).
    """
    names = [k for k in ("prior", *METHODS) if k in data]
    if not names:
        raise ValueError(f"data needs one of {('prior', *METHODS)}, got {sorted(data)}")
    pts = {k: np.asarray(data[k], np.float64) for k in names}
    ref = pts[names[0]]
    if ref.ndim != 2 or ref.shape[-1] != 2:
        raise ValueError(f"plot_fig1 needs [n, 2] points, got shape {ref.shape}")
    centre = np.median(ref, axis=0)
    deviations = np.abs(ref - centre).ravel()
    half = 1.05 * _bulk_halfwidth(deviations)
    # Heavy tails: a logarithmic colour scale shows the tails next to the sharp centre.
    colours = "log" if _heavy_tailed(deviations) else "linear"
    window = [[centre[0] - half, centre[0] + half], [centre[1] - half, centre[1] + half]]
    fig, axes = _figure(1, len(names), size=3.2)
    for ax, name in zip(axes[0], names, strict=True):
        p = pts[name]
        outside = float(np.mean(np.any(np.abs(p - centre) > half, axis=-1)))
        ax.hist2d(p[:, 0], p[:, 1], bins=bins, range=window, cmap="viridis", norm=colours)
        ax.set_xlim(*window[0])
        ax.set_ylim(*window[1])
        note = _outside_note(outside)
        ax.set_title(_TITLES.get(name, name) + (f"\n{note}" if note else ""), fontsize="medium")
        ax.set_aspect("equal")
        ax.set_xlabel("z₁")
    axes[0, 0].set_ylabel("z₂")
    scale = " (logarithmic colour scale)" if colours == "log" else ""
    fig.suptitle((title or "2-D midpoints of independent prior pairs") + scale)
    return fig


def _log_hist(ax, values: np.ndarray, lo: float, hi: float, bins: int, **kwargs):
    """Histogram on a logarithmic x axis, as a density per decade (integrates to the share)."""
    edges = np.geomspace(lo, hi, bins + 1)
    per_decade = bins / (np.log10(hi) - np.log10(lo))
    out = ax.hist(
        values, bins=edges, weights=np.full(values.shape, per_decade / values.size), **kwargs
    )
    ax.set_xscale("log")
    return out


def plot_fig2(data_by_prior: Mapping[str, Mapping[str, Any]], *, bins: int = 100):
    """Histograms of squared midpoint norms (Agustsson Fig. 2); returns a Figure.

    Each panel spans every ‖y‖² of every method. Where the prior samples' ‖y‖² are heavy
    tailed (their 99th percentile deviation from the median exceeds 5 times the upper
    quartile, e.g. a Cauchy prior, whose E‖y‖² is infinite) the x axis is logarithmic and the
    y axis a density per decade, so the histograms are not squeezed into one bin. One legend,
    below the panels, covers no histogram.

    Args:
      data_by_prior: ``{prior name: fig2_data(...)}``, one panel per prior.
      bins: histogram bins.
    """
    fig, axes = _figure(1, len(data_by_prior), size=4.0)
    handles = {}
    for ax, (title, data) in zip(axes[0], data_by_prior.items(), strict=True):
        names = [k for k in ("prior", *METHODS) if k in data]
        vals = {k: np.asarray(data[k], np.float64).ravel() for k in names}
        ref = vals.get("prior", vals[names[0]])
        heavy = _heavy_tailed(np.abs(ref - np.median(ref)))
        if heavy:
            positive = np.concatenate([v[v > 0] for v in vals.values()])
            lo, hi = float(positive.min()), float(positive.max())
        else:
            lo = min(float(v.min()) for v in vals.values())
            hi = max(float(v.max()) for v in vals.values())
        hi = hi if hi > lo else lo + 1.0
        for name in names:
            label = _TITLES.get(name, name)
            style = {"histtype": "step", "lw": 1.5, "label": label}
            if heavy:
                *_, patches = _log_hist(ax, vals[name], lo, hi, bins, **style)
            else:
                *_, patches = ax.hist(vals[name], bins=bins, range=(lo, hi), density=True, **style)
            handles[label] = patches[0]
        ax.set_title(title + ("\n(logarithmic x axis: heavy tails)" if heavy else ""))
        ax.set_xlabel("squared norm ‖y‖²")
        ax.set_ylabel("density per decade" if heavy else "density")
        ax.set_xlim(lo, hi)
        ax.set_ylim(bottom=0)
    fig.legend(
        list(handles.values()),
        list(handles),
        loc="outside lower center",
        ncols=min(len(handles), 2 * len(data_by_prior)),
        frameon=False,
    )
    return fig


def plot_fig3(data: Mapping[str, Any]):
    """The monotone maps T_t(y) (Agustsson Fig. 3, ``data`` from :func:`fig3_data`)."""
    fig, axes = _figure(1, 1, size=4.0)
    ax = axes[0, 0]
    y = np.asarray(data["y"])
    for t, m in zip(np.asarray(data["t"]), np.asarray(data["maps"]), strict=True):
        ax.plot(y, m, label=f"t = {t:g}")
    ax.plot(y, y, color="gray", lw=0.5, ls="--", label="identity")
    ax.set_xlabel("y = (1 - t) z₀ + t z₁")
    ax.set_ylabel("T_t(y)")
    ax.set_title("matched maps T_t = F_Z⁻¹ ∘ F_Y", fontsize="medium")
    ax.legend(fontsize="small")
    return fig


def plot_norm_distribution(data: Mapping[str, Mapping[int, Mapping[str, Any]]], *, bins=60):
    """Norm histograms with Obs. 2.1 and exact densities (Leśniak Fig. 1); returns a Figure.

    ``data`` comes from :func:`norm_distribution_data`: one row per prior, one column per
    dimension. A panel spans the grid ``r`` (the norms' 0.5%-99.5% quantiles); where the norms
    are heavy tailed (see :func:`plot_fig2`, e.g. a Cauchy prior) it spans all of them on a
    logarithmic x axis, as a density per decade.
    """
    names = list(data)
    dims = list(next(iter(data.values())))
    fig, axes = _figure(len(names), len(dims), size=2.6)
    for i, name in enumerate(names):
        for j, d in enumerate(dims):
            ax = axes[i, j]
            rec = data[name][d]
            r = np.asarray(rec["r"], np.float64)
            norms_ = np.asarray(rec["norms"], np.float64)
            heavy = _heavy_tailed(np.abs(norms_ - np.median(norms_)))
            curves = []
            if np.isfinite(float(rec["approx_var"])):
                curves.append(("Obs. 2.1", np.asarray(rec["approx_pdf"], np.float64), "-"))
            if rec["exact_pdf"] is not None:
                curves.append(("exact", np.asarray(rec["exact_pdf"], np.float64), "--"))
            if heavy:
                positive = norms_[norms_ > 0]
                _log_hist(ax, positive, positive.min(), positive.max(), bins, alpha=0.5)
                # A density p(r) per unit is p(r) · r · ln 10 per decade.
                curves = [(k, pdf * r * math.log(10), ls) for k, pdf, ls in curves]
                ax.set_title(f"{name}, d = {d} (log x)", fontsize="small")
            else:
                ax.hist(norms_, bins=bins, range=(r[0], r[-1]), density=True, alpha=0.5)
                ax.set_title(f"{name}, d = {d}", fontsize="small")
            for label, pdf, ls in curves:
                ax.plot(r, pdf, ls=ls, label=label)
            if i == len(names) - 1:
                ax.set_xlabel("‖z‖")
            if j == 0:
                ax.set_ylabel("density per decade" if heavy else "density", fontsize="small")
            if i == 0 and j == 0:
                ax.legend(fontsize="x-small")
    return fig
