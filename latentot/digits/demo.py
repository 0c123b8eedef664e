"""The end-to-end digits demo behind ``latentot demo``: tables, figures and a report.

:func:`run_demo` trains the scoring classifier, computes the two tables of
:mod:`latentot.digits.experiments`, the mismatch statistics of the generators' priors, and writes
into one directory:

* ``report.md`` and ``report.json``: settings, timings (wall and CPU), both tables (per seed and
  mean ± std), the mismatch statistics, and the papers' claims checked against the numbers;
* ``samples.png``: digit grids of real digits and of every generator;
* ``aeot.png``: AE-OT samples, and the codes, the Gaussian fit and AE-OT in the codes' first two
  principal components;
* ``interpolation_uniform.png``, ``interpolation_gaussian.png``: 2-point interpolation strips
  (linear / SLERP / matched) and 4-point grids of the two generators;
* ``interpolation_codes.png``: held-out digits of different classes interpolated in the
  autoencoder's code space, linearly, by SLERP and matched through the AE-OT map
  (:func:`latentot.digits.experiments.real_interpolation`, whose table is in the report);
* ``midpoints_uniform.png``: decoded prior samples and 4-point midpoints (linear / SLERP /
  matched) of the uniform-prior generator;
* ``mismatch_fig1.png``, ``mismatch_fig2.png``, ``mismatch_fig3.png``: Agustsson et al.'s
  Figs 1–3 (2-D uniform midpoints, squared norms of midpoints at the generators' latent
  dimension, the monotone maps).

Every file is written atomically (a temporary file in the same directory, ``fsync``, then
``os.replace``), so an interrupted run never leaves a half-written file.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import platform
import resource
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from latentot import diagnostics, ops
from latentot._io import save_figure, write_bytes_atomic
from latentot.digits import experiments, models, scores
from latentot.digits.budget import Budget
from latentot.matching import matched_grid, matched_lerp, matched_spline
from latentot.splines import spline

__all__ = [
    "FIGURES",
    "claims",
    "keyframe_path",
    "plot_aeot",
    "plot_digit_panels",
    "plot_interpolations",
    "plot_keyframe_path",
    "plot_midpoints",
    "plot_real_interpolation",
    "run_demo",
]

#: The figures :func:`run_demo` writes.
FIGURES = (
    "samples.png",
    "aeot.png",
    "interpolation_uniform.png",
    "interpolation_gaussian.png",
    "keyframe_path_uniform.png",
    "midpoints_uniform.png",
    "mismatch_fig1.png",
    "mismatch_fig2.png",
    "mismatch_fig3.png",
    "interpolation_codes.png",
)


# --------------------------------------------------------------------------------------------
# Figures (matplotlib's object API: no global state, works with any backend).


def _figure(nrows: int, ncols: int, *, width: float, height: float):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def _tile(images: Any, ncols: int, *, pad: int = 1) -> np.ndarray:
    """Tiles images ``[n, 64]`` into one array of 8×8 cells separated by ``pad`` pixels."""
    x = np.asarray(images, dtype=np.float32).reshape(-1, *models.IMAGE_SHAPE)
    n, h, w = x.shape
    nrows = -(-n // ncols)
    out = np.zeros((nrows * (h + pad) - pad, ncols * (w + pad) - pad), np.float32)
    for i in range(n):
        r, c = divmod(i, ncols)
        out[r * (h + pad) : r * (h + pad) + h, c * (w + pad) : c * (w + pad) + w] = x[i]
    return out


def _show(ax, images: Any, ncols: int, title: str | None = None) -> None:
    ax.imshow(_tile(images, ncols), cmap="gray_r", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize="small")


def plot_digit_panels(panels: Mapping[str, Any], *, ncols: int = 8, per_row: int = 3):
    """One grid of digits per panel (``{title: images [n, 64]}``); returns a Figure."""
    names = list(panels)
    rows = -(-len(names) // per_row)
    fig, axes = _figure(rows, per_row, width=3.2 * per_row, height=3.4 * rows)
    for ax in axes.ravel():
        ax.set_axis_off()
    for ax, name in zip(axes.ravel(), names, strict=False):
        ax.set_axis_on()
        _show(ax, panels[name], ncols, name)
    return fig


# One compilation for all the latents of a figure (eager dispatch compiled every operation).
@functools.partial(jax.jit, static_argnames=("dim", "pairs", "steps", "grid", "stats_pairs"))
def interpolation_latents(
    rng: jax.Array,
    prior: Any,
    *,
    dim: int,
    pairs: int = 4,
    steps: int = 9,
    grid: int = 5,
    stats_pairs: int = 2000,
) -> dict[str, Any]:
    """Latents of the interpolation figures: strips, 4-point grids and norms along the paths.

    Returns:
        ``{"t": [steps], "strips": {method: [pairs, steps, dim]}, "grids": {method:
        [grid, grid, dim]}, "norms": {method: [steps]}, "prior_norm": scalar}``: each strip
        goes from one prior sample to another, each grid spans four prior samples; ``norms``
        is the mean ‖z_t - loc‖ over ``stats_pairs`` independent pairs at every t, and
        ``prior_norm`` that of prior samples.
    """
    k_pairs, k_corners, k_stats = jax.random.split(rng, 3)
    ts = jnp.linspace(0.0, 1.0, steps, dtype=jnp.float32)

    def paths(z0, z1):  # {method: [steps, n, dim]}
        t = ts[:, None]  # [steps, 1] against the leading axis [n] of z0, z1
        return {
            "linear": ops.lerp(z0, z1, t),
            "slerp": ops.slerp(z0, z1, t),
            "matched": jax.vmap(lambda t: matched_lerp(prior, z0, z1, t))(ts),
        }

    z = prior.sample(k_pairs, (2, pairs, dim), jnp.float32)
    strips = {k: jnp.swapaxes(v, 0, 1) for k, v in paths(z[0], z[1]).items()}
    corners = prior.sample(k_corners, (4, dim), jnp.float32)
    grids = {
        "linear": ops.grid(corners, grid),
        "slerp": _slerp_grid(corners, grid),
        "matched": matched_grid(prior, corners, grid),
    }
    loc = jnp.asarray(getattr(prior, "loc", 0.0), jnp.float32)
    zs = prior.sample(k_stats, (2, stats_pairs, dim), jnp.float32)
    norms = {
        k: jnp.mean(jnp.linalg.norm(v - loc, axis=-1), axis=-1)
        for k, v in paths(zs[0], zs[1]).items()
    }
    prior_norm = jnp.mean(jnp.linalg.norm(zs[0] - loc, axis=-1))
    return {"t": ts, "strips": strips, "grids": grids, "norms": norms, "prior_norm": prior_norm}


def _slerp_grid(corners: jax.Array, n: int) -> jax.Array:
    """Bilinear SLERP: along the top and bottom edges, then between them."""
    s = jnp.linspace(0.0, 1.0, n, dtype=corners.dtype)
    top = ops.slerp(corners[0], corners[1], s)  # [n, d]
    bottom = ops.slerp(corners[2], corners[3], s)
    shape = (n, *top.shape)  # row i interpolates top -> bottom at v = s[i]
    v = jnp.broadcast_to(s[:, None], shape[:2])
    return ops.slerp(jnp.broadcast_to(top, shape), jnp.broadcast_to(bottom, shape), v)


_METHOD_LABELS = {"linear": "linear", "slerp": "SLERP", "matched": "matched"}


def _cell_centres(n: int) -> list[float]:
    cell = models.IMAGE_SHAPE[0] + 1  # _tile's pitch: 8 pixels and a 1-pixel gap
    return [cell * i + (cell - 1) / 2 - 0.5 for i in range(n)]


def keyframe_path(
    rng: jax.Array,
    prior: Any,
    *,
    dim: int,
    keyframes: int = 6,
    frames_per_key: int = 8,
    stats_paths: int = 500,
) -> dict[str, Any]:
    """A looping latent video through prior keyframes: raw and matched Catmull-Rom frames.

    The path is ``latentot.spline`` / ``latentot.matched_spline`` with ``closed=True`` through
    ``keyframes`` prior samples, ``frames_per_key`` frames per segment. The statistics use
    ``stats_paths`` independent keyframe sets: frame r's KS distance pools all components of
    all paths at frame r against the prior's CDF, and its norm is the mean ‖z - loc‖ relative
    to prior samples'.

    Returns:
        ``{"t": [T], "keyframes": [K, dim], "frames": {"raw": [T, dim], "matched": [T, dim]},
        "ks": {"raw": [T], "matched": [T]}, "norm": {"raw": [T], "matched": [T]}}`` with
        T = ``keyframes * frames_per_key``.
    """
    k_key, k_stats, k_ref = jax.random.split(rng, 3)
    t = np.arange(keyframes * frames_per_key, dtype=np.float32) / frames_per_key  # concrete

    def frames(keys):  # keys [K, ..., dim] -> {method: [T, ..., dim]}
        return {
            "raw": spline(keys, t, closed=True),
            "matched": matched_spline(prior, keys, t, closed=True),
        }

    @jax.jit  # one compilation (eager dispatch compiled every operation)
    def compute(k_key, k_stats, k_ref, prior):
        keys = prior.sample(k_key, (keyframes, dim), jnp.float32)
        many = prior.sample(k_stats, (keyframes, stats_paths, dim), jnp.float32)
        stats = frames(many)  # {method: [T, stats_paths, dim]}
        loc = jnp.asarray(getattr(prior, "loc", 0.0), jnp.float32)
        ref = prior.sample(k_ref, (stats_paths, dim), jnp.float32)
        ref_norm = jnp.mean(jnp.linalg.norm(ref - loc, axis=-1))
        ks = jax.vmap(diagnostics.ks_distance, in_axes=(0, None))
        return {
            "keyframes": keys,
            "frames": frames(keys),
            "ks": {m: ks(v, prior) for m, v in stats.items()},
            "norm": {
                m: jnp.mean(jnp.linalg.norm(v - loc, axis=-1), axis=-1) / ref_norm
                for m, v in stats.items()
            },
        }

    out = compute(k_key, k_stats, k_ref, prior)
    return {
        "t": t,
        "keyframes": out["keyframes"],
        "frames": out["frames"],
        "ks": {m: np.asarray(v) for m, v in out["ks"].items()},
        "norm": {m: np.asarray(v) for m, v in out["norm"].items()},
    }


def plot_keyframe_path(generator: Any, path: Mapping[str, Any], *, title: str):
    """Decoded raw and matched frames of :func:`keyframe_path`, and their per-frame mismatch.

    Top: the frames of the loop, a row per method (keyframes framed). Bottom: per-frame KS
    distance to the prior and mean norm relative to prior samples: the raw spline's mismatch
    peaks between keyframes, the matched one stays flat. Returns a Figure.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    t = np.asarray(path["t"])
    methods = list(path["frames"])
    per_key = round(1 / (t[1] - t[0]))
    n = min(t.shape[0], 3 * per_key + 1)  # the first three segments, both ends included
    shown = np.arange(n) % t.shape[0]
    cell = models.IMAGE_SHAPE[0] + 1
    decoded = np.concatenate(
        [np.asarray(generator.decode(path["frames"][m][shown])) for m in methods]
    )

    fig = Figure(figsize=(12.5, 6.2), layout="constrained")
    fig.suptitle(title)
    top, bottom = fig.subfigures(2, 1, height_ratios=[0.8, 1.15])
    ax = top.subplots()
    _show(ax, decoded, n)
    for i in range(0, n, per_key):
        ax.add_patch(
            Rectangle(
                (cell * i - 1, -0.5), cell, cell * len(methods) - 1, fill=False, ec="C3", lw=1.5
            )
        )
    ax.set_yticks(_cell_centres(len(methods)), methods)
    centres = _cell_centres(n)
    ticks = range(0, n, per_key // 2)
    ax.set_xticks([centres[i] for i in ticks], [f"{t[shown[i]]:g}" for i in ticks])
    ax.set_xlabel(f"t (first 3 of {t.shape[0] // per_key} segments; keyframes framed)", fontsize=9)
    ax.tick_params(length=0, labelsize=9)

    ks_ax, norm_ax = bottom.subplots(1, 2)
    for i, m in enumerate(methods):
        ks_ax.plot(t, path["ks"][m], marker=".", color=f"C{i}", label=m)
        norm_ax.plot(t, path["norm"][m], marker=".", color=f"C{i}", label=m)
    for a in (ks_ax, norm_ax):
        for k in np.arange(0, t[-1] + 1):
            a.axvline(k, color="0.85", lw=0.8, zorder=0)
        a.set_xlabel("t (the loop is periodic)")
        a.legend(fontsize=9)
    ks_ax.set_ylabel("KS distance of the components to the prior")
    ks_ax.set_ylim(bottom=0)
    norm_ax.axhline(1.0, color="0.3", ls="--", lw=0.8)
    norm_ax.set_ylabel("mean latent norm / prior samples'")
    return fig


def plot_interpolations(
    generator: Any,
    latents: Mapping[str, Any],
    *,
    title: str,
    grid_caption: str = "4-point grids (corners: four prior samples)",
    strip_caption: str = "2-point interpolation z₀ → z₁ (framed: t = 0.5)",
):
    """Interpolation strips, their midpoints enlarged, norms along the path and 4-point grids.

    ``latents`` comes from :func:`interpolation_latents`. Top left: one panel per pair, a row
    per method, columns at the values of t (the midpoint column framed). Top right: the
    midpoints (t = 0.5) of every pair and method, enlarged: that is where the methods differ.
    Bottom left: the mean latent norm along the path relative to prior samples (linear
    interpolation sags in the middle). Bottom right: 4-point grids. Returns a Figure.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    strips, grids = latents["strips"], latents["grids"]
    methods = list(strips)
    labels = [_METHOD_LABELS.get(m, m) for m in methods]
    pairs, steps = next(iter(strips.values())).shape[:2]
    ts = np.asarray(latents.get("t", np.linspace(0.0, 1.0, steps)))
    mid = int(np.argmin(np.abs(ts - 0.5)))
    cell = models.IMAGE_SHAPE[0] + 1
    decoded = {
        m: np.asarray(generator.decode(strips[m].reshape(-1, strips[m].shape[-1]))).reshape(
            pairs, steps, -1
        )
        for m in methods
    }

    fig = Figure(figsize=(12.5, 7.6), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[1.0, 1.05])
    left, right = top.subfigures(1, 2, width_ratios=[2.2, 1.0])

    # Strips: a panel per pair.
    ncols = 2 if pairs > 1 else 1
    nrows = -(-pairs // ncols)
    saxes = left.subplots(nrows, ncols, squeeze=False)
    xticks = [i for i in range(steps) if ts[i] in (0.0, 0.25, 0.5, 0.75, 1.0)] or [0, steps - 1]
    for p, ax in enumerate(saxes.ravel()):
        if p >= pairs:
            ax.set_axis_off()
            continue
        _show(ax, np.concatenate([decoded[m][p] for m in methods]), steps)
        ax.add_patch(
            Rectangle(
                (cell * mid - 1, -0.5),
                cell,
                cell * len(methods) - 1,
                fill=False,
                ec="C3",
                lw=1.5,
                clip_on=False,
            )
        )
        ax.set_yticks(_cell_centres(len(methods)), labels if p % ncols == 0 else [])
        centres = _cell_centres(steps)
        bottom_row = p // ncols == nrows - 1 or p + ncols >= pairs
        ax.set_xticks(
            [centres[i] for i in xticks], [f"{ts[i]:g}" for i in xticks] if bottom_row else []
        )
        ax.tick_params(length=0, labelsize=9)
        ax.set_title(f"pair {p + 1}", fontsize=9)
        if bottom_row:
            ax.set_xlabel("t", fontsize=9)
    left.suptitle(strip_caption, fontsize=10)

    # Midpoints, enlarged: rows are methods, columns pairs.
    ax = right.subplots(1, 1)
    _show(ax, np.concatenate([decoded[m][:, mid] for m in methods]), pairs)
    ax.set_yticks(_cell_centres(len(methods)), labels)
    ax.set_xticks(_cell_centres(pairs), [f"pair {p + 1}" for p in range(pairs)])
    ax.tick_params(length=0, labelsize=9)
    right.suptitle(f"midpoints (t = {ts[mid]:g}), enlarged", fontsize=10)

    nfig, gfig = bottom.subfigures(1, 2, width_ratios=[1.0, 2.4])
    ax = nfig.subplots(1, 1)
    if "norms" in latents:
        ref = float(latents["prior_norm"])
        values = {m: np.asarray(latents["norms"][m]) / ref for m in methods}
        _profile(
            ax, ts, values, labels, 1.0, "prior samples", "mean ‖z_t‖ / mean ‖z‖ of prior samples"
        )
        ax.set_title("latent norm along the path", fontsize=10)
    elif "confidence" in latents:
        values = {m: np.asarray(latents["confidence"][m]) for m in methods}
        ref = float(latents["reference_confidence"])
        _profile(ax, ts, values, labels, ref, "held-out digits", "mean classifier confidence")
        ax.set_title("decoded path: classifier confidence", fontsize=10)
    else:
        ax.set_axis_off()
    gaxes = gfig.subplots(1, len(methods), squeeze=False)[0]
    for gax, m, label in zip(gaxes, methods, labels, strict=True):
        g = grids[m]
        _show(gax, generator.decode(g.reshape(-1, g.shape[-1])), g.shape[1], f"4-point {label}")
        gax.title.set_fontsize(10)
    gfig.suptitle(grid_caption, fontsize=10)
    fig.suptitle(title, fontsize=12)
    return fig


def _profile(ax, ts, values, labels, reference, reference_label, ylabel):
    """One curve per method along t, and a dashed reference line."""
    # Distinct line styles and markers: the matched and SLERP curves may lie on top of each other.
    styles = itertools.cycle([("-", "o"), ("--", "^"), (":", "s")])
    for v, label, (ls, mk) in zip(values.values(), labels, styles, strict=False):
        ax.plot(ts, v, ls=ls, marker=mk, ms=4, label=label)
    ax.axhline(reference, color="gray", lw=0.8, ls="--", label=reference_label)
    ax.set_xlabel("t")
    ax.set_ylabel(ylabel)
    ax.set_xticks([0, 0.25, 0.5, 0.75, 1])
    ax.legend(fontsize="small")


def plot_midpoints(generator: Any, prior: Any, rng: jax.Array, *, n: int = 18, ncols: int = 6):
    """Decoded prior samples and 4-point midpoints (linear, SLERP, matched); returns a Figure.

    The midpoints are the centres of bilinear grids on four prior samples
    (:func:`latentot.digits.experiments.interpolation_midpoints`).
    """
    mids = experiments.interpolation_midpoints(rng, prior, n=n, dim=generator.latent_dim)
    names = ["prior", "4-point linear", "4-point slerp", "4-point matched"]
    titles = ["prior samples", "linear midpoints", "SLERP midpoints", "matched midpoints"]
    fig, axes = _figure(1, len(names), width=2.0 * len(names), height=1.9)
    for ax, name, title in zip(axes[0], names, titles, strict=True):
        _show(ax, generator.decode(mids[name]), ncols, title)
    return fig


def plot_aeot(liu: experiments.LiuModels, rng: jax.Array, *, n: int = 64, points: int = 600):
    """AE-OT samples, and codes / Gaussian fit / AE-OT in the codes' first two PCs."""
    k_ot, k_gauss, k_scatter = jax.random.split(rng, 3)
    fig, axes = _figure(1, 3, width=13.0, height=4.4)
    ae = liu.autoencoder
    _show(axes[0, 0], ae.decode(liu.sampler.sample(k_ot, n)), 8, "AE-OT samples, decoded")
    _show(axes[0, 1], ae.decode(liu.gaussian_codes(k_gauss, n)), 8, "Gaussian fit, decoded")
    codes = np.asarray(liu.codes, np.float64)
    mean = codes.mean(axis=0)
    _, _, vt = np.linalg.svd(codes - mean, full_matrices=False)
    basis = vt[:2].T

    def project(z):
        return (np.asarray(z, np.float64) - mean) @ basis

    k1, k2 = jax.random.split(k_scatter)
    ax = axes[0, 2]
    ax.scatter(*project(codes[:points]).T, s=4, alpha=0.6, label="AE codes")
    ax.scatter(*project(liu.gaussian_codes(k1, points)).T, s=4, alpha=0.4, label="Gaussian fit")
    ax.scatter(*project(liu.sampler.sample(k2, points)).T, s=4, alpha=0.6, label="AE-OT")
    ax.set_title("latent codes, first two principal components", fontsize="small")
    ax.legend(fontsize="small", markerscale=3)
    return fig


# --------------------------------------------------------------------------------------------
# Claims of the papers, checked against the tables.


def claims(liu: experiments.Table, agustsson: experiments.Table) -> list[dict[str, Any]]:
    """The papers' claims as comparisons of mean inception scores, with the measured verdict.

    A claim "A > B" holds when the mean of A exceeds the mean of B; ``margin`` is that
    difference in units of the larger of the two standard deviations (0 when both are 0), so
    ``|margin| < 1`` flags a difference within the seed-to-seed spread.
    """
    out = []

    def compare(table, claim, high, low, source):
        s = table.summary()
        (mh, sh), (ml, sl) = s[high]["inception_score"], s[low]["inception_score"]
        spread = max(sh, sl)
        out.append(
            {
                "claim": claim,
                "source": source,
                "holds": bool(mh > ml),
                "values": [mh, ml],
                "margin": (mh - ml) / spread if spread > 0 else None,
            }
        )

    names = list(liu.rows)
    vae, gauss, ot = (next(n for n in names if n.startswith(p)) for p in ("(a)", "(b)", "(c)"))
    compare(liu, "AE-OT scores higher than the VAE", ot, vae, "Liu et al. Table 1")
    compare(liu, "AE-OT scores higher than a Gaussian fit of the codes", ot, gauss, "Liu et al.")
    for pname in ("uniform", "Gaussian"):
        base = f"{pname} prior: prior"
        for k in ("2-point", "4-point"):
            compare(
                agustsson,
                f"{pname} prior, {k}: prior samples score higher than linear midpoints",
                base,
                f"{pname} prior: {k} linear",
                "Agustsson et al. Table 2",
            )
            compare(
                agustsson,
                f"{pname} prior, {k}: matched midpoints score higher than linear ones",
                f"{pname} prior: {k} matched",
                f"{pname} prior: {k} linear",
                "Agustsson et al. Table 2",
            )
    return out


# --------------------------------------------------------------------------------------------
# The pipeline.


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class _Clock:
    """Wall and CPU time of named stages."""

    def __init__(self):
        self.stages: dict[str, dict[str, float]] = {}
        self._wall, self._cpu = time.perf_counter(), _cpu_seconds()

    def stage(self, name: str, fn: Callable[[], Any]) -> Any:
        w, c = time.perf_counter(), _cpu_seconds()
        out = fn()
        self.stages[name] = {"wall_s": time.perf_counter() - w, "cpu_s": _cpu_seconds() - c}
        return out

    def total(self) -> dict[str, float]:
        return {
            "wall_s": time.perf_counter() - self._wall,
            "cpu_s": _cpu_seconds() - self._cpu,
        }


def run_demo(
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    seeds: int = 3,
    fast: bool = False,
    budget: Budget | None = None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    command: str | None = None,
) -> dict[str, Any]:
    """Runs the whole digits pipeline and writes figures and the report into ``out_dir``.

    Args:
        out_dir: output directory (created if missing).
        seed: base seed; seed ``i`` of a table uses ``fold_in(key(seed), i)``.
        seeds: number of seeds of each table.
        fast: shorthand for ``budget=Budget.fast()`` (seconds, poor models: for tests).
        budget: the :class:`~latentot.digits.budget.Budget` (default: ``Budget()``, or
            ``Budget.fast()`` with ``fast``).
        progress: show progress bars.
        log: called with one line per stage and per model (e.g. ``print``); ``None`` is
            silent.
        command: the command line to record in the report (default: the ``latentot demo``
            command equivalent to these arguments).

    Returns:
        The report (the content of ``report.json``).

    Raises:
        ValueError: if ``fast`` is given together with a ``budget`` other than the fast one.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)  # only takes effect if pyplot was not imported yet

    say = log or (lambda _msg: None)
    if budget is None:
        budget = Budget.fast() if fast else Budget()
    elif fast and budget != Budget.fast():
        raise ValueError("fast=True selects Budget.fast(); pass either fast or budget")
    fast = budget == Budget.fast()
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    clock = _Clock()
    root = jax.random.key(seed)
    k_scorer, k_liu, k_agu, k_mis, k_fig = jax.random.split(root, 5)

    say("data: sklearn digits, split train / reference / holdout")
    split = models.split_digits(seed=seed)
    say(f"scorer: training the digits classifier ({budget.classifier_steps} steps)")
    scorer = clock.stage(
        "scorer",
        lambda: scores.fit_scorer(
            k_scorer,
            split.train_x,
            split.train_y,
            split.reference_x,
            split.reference_y,
            steps=budget.classifier_steps,
            progress=progress,
        ),
    )
    say(f"scorer accuracy on held-out digits: {scorer.accuracy:.3f}")
    say(f"Liu table: autoencoder, VAE, Gaussian fit, AE-OT × {seeds} seeds")
    liu, liu_models = clock.stage(
        "liu_table",
        lambda: experiments.liu_table(
            k_liu, split, scorer, seeds=seeds, budget=budget, progress=progress, log=log
        ),
    )
    wide = budget.wide_latent_dim
    say(f"Liu table at latent dimension {wide}: the same models × {seeds} seeds")
    liu_wide, _ = clock.stage(
        "liu_table_wide",
        lambda: experiments.liu_table(
            jax.random.fold_in(k_liu, wide),
            split,
            scorer,
            seeds=seeds,
            budget=budget,
            latent_dim=wide,
            progress=progress,
            log=log,
        ),
    )
    say(f"Agustsson table: uniform- and Gaussian-prior WGAN-GP × {seeds} seeds")
    agu, agu_models = clock.stage(
        "agustsson_table",
        lambda: experiments.agustsson_table(
            k_agu, split, scorer, seeds=seeds, budget=budget, progress=progress, log=log
        ),
    )
    say("mismatch statistics of the generators' priors")
    dim = budget.gan_latent_dim
    n_mismatch = budget.mismatch_samples
    mismatch = clock.stage(
        "mismatch",
        lambda: {
            name: diagnostics.mismatch_report(k, prior, dim, n_mismatch)
            for k, (name, prior) in zip(
                jax.random.split(k_mis, 2), experiments._table_priors().items(), strict=True
            )
        },
    )
    say("interpolating held-out digits: linear, SLERP and matched through AE-OT")
    real = clock.stage(
        "real_interpolation",
        lambda: experiments.real_interpolation(
            jax.random.fold_in(k_fig, 1), liu_models, split, scorer, n=budget.n_samples
        ),
    )
    figures = clock.stage(
        "figures",
        lambda: _write_figures(
            out_dir, k_fig, split, liu_models, agu_models, real, budget=budget, say=say
        ),
    )
    if command is None:
        command = (
            f"latentot demo --out {out_dir} --seeds {seeds} --seed {seed}"
            + (" --fast" if fast else "")
            + (" (custom budget)" if budget != (Budget.fast() if fast else Budget()) else "")
        )
    report = {
        "command": command,
        "settings": {
            "seed": seed,
            "seeds": seeds,
            "fast": fast,
            "budget": budget.as_dict(),
            "split_sizes": {
                "train": int(split.train_x.shape[0]),
                "reference": int(split.reference_x.shape[0]),
                "holdout": int(split.holdout_x.shape[0]),
            },
            "mismatch_pairs": n_mismatch,
        },
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "jax": jax.__version__,
            "backend": jax.default_backend(),
        },
        "scorer": {"accuracy": scorer.accuracy, "steps": budget.classifier_steps},
        "tables": {
            "liu": liu.as_dict(),
            "liu_wide": liu_wide.as_dict(),
            "agustsson": agu.as_dict(),
        },
        "claims": claims(liu, agu),
        "mismatch": {k: v.as_dict() for k, v in mismatch.items()},
        "real_interpolation": real.as_dict(),
        "figures": list(figures),
    }
    report["timings"] = {"stages": clock.stages, "total": clock.total()}
    write_bytes_atomic(
        os.path.join(out_dir, "report.json"),
        (json.dumps(report, indent=2, allow_nan=True) + "\n").encode(),
    )
    write_bytes_atomic(
        os.path.join(out_dir, "report.md"),
        _markdown(report, liu, liu_wide, agu, mismatch, real).encode(),
    )
    t = report["timings"]["total"]
    say(f"done in {t['wall_s']:.0f} s wall, {t['cpu_s']:.0f} s CPU; wrote {out_dir}")
    return report


def _write_figures(out_dir, rng, split, liu_models, agu_models, real, *, budget, say) -> list[str]:
    k_samples, k_aeot, k_uni, k_gauss, k_f1, k_f2, k_mid, k_path = jax.random.split(rng, 8)
    keys = jax.random.split(k_samples, 6)
    n = 64
    ae = liu_models.autoencoder
    gens = agu_models.generators
    panels = {
        "real digits (held out)": split.holdout_x[:n],
        "VAE": liu_models.vae.sample(keys[0], n),
        "Gaussian fit to AE codes": ae.decode(liu_models.gaussian_codes(keys[1], n)),
        "AE-OT": ae.decode(liu_models.sampler.sample(keys[2], n)),
        "WGAN-GP, uniform prior": gens["uniform"].sample(keys[3], n),
        "WGAN-GP, Gaussian prior": gens["Gaussian"].sample(keys[4], n),
    }
    written = []

    def save(name, make):
        say(f"figures: {name} ({len(written) + 1}/{len(FIGURES)})")
        save_figure(make(), os.path.join(out_dir, name))
        written.append(name)

    save("samples.png", lambda: plot_digit_panels(panels))
    save("aeot.png", lambda: plot_aeot(liu_models, k_aeot))
    for key, (pname, prior), fname in zip(
        (k_uni, k_gauss),
        experiments._table_priors().items(),
        ("interpolation_uniform.png", "interpolation_gaussian.png"),
        strict=True,
    ):
        lat = interpolation_latents(key, prior, dim=budget.gan_latent_dim)
        gen, title = gens[pname], f"WGAN-GP, {pname} prior"
        save(fname, lambda g=gen, lat=lat, title=title: plot_interpolations(g, lat, title=title))
    uniform = experiments._table_priors()["uniform"]
    path = keyframe_path(k_path, uniform, dim=budget.gan_latent_dim)
    save(
        "keyframe_path_uniform.png",
        lambda: plot_keyframe_path(
            gens["uniform"], path, title="WGAN-GP, uniform prior: a looping keyframe path"
        ),
    )
    save("midpoints_uniform.png", lambda: plot_midpoints(gens["uniform"], uniform, k_mid))
    n_fig = budget.figure_samples
    save(
        "mismatch_fig1.png",
        lambda: diagnostics.plot_fig1(
            diagnostics.fig1_data(k_f1, n=n_fig, prior=uniform),
            title="2-D Uniform(-1, 1) prior: midpoints of independent pairs",
        ),
    )
    f2 = {
        f"{pname} prior, d = {budget.gan_latent_dim}": diagnostics.fig2_data(
            k, prior, dim=budget.gan_latent_dim, n=n_fig // 4
        )
        for k, (pname, prior) in zip(
            jax.random.split(k_f2, 2), experiments._table_priors().items(), strict=True
        )
    }
    save("mismatch_fig2.png", lambda: diagnostics.plot_fig2(f2))
    save("mismatch_fig3.png", lambda: diagnostics.plot_fig3(diagnostics.fig3_data(uniform)))
    save("interpolation_codes.png", lambda: plot_real_interpolation(liu_models, real))
    return written


def plot_real_interpolation(liu: experiments.LiuModels, real: experiments.RealInterpolation):
    """Held-out digits interpolated in code space: linear, SLERP, matched through AE-OT.

    The strips and grid of :func:`plot_interpolations`, decoded by the autoencoder, for the
    paths of :func:`latentot.digits.experiments.real_interpolation`. Returns a Figure.
    """
    corners, mean, n = real.corners, real.mean, 5
    grids = {
        "linear": ops.grid(corners, n),
        "slerp": mean + _slerp_grid(corners - mean, n),
        "matched": matched_grid(liu.sampler, corners, n),
    }
    latents = {
        "t": real.t,
        "strips": real.strips,
        "grids": grids,
        "confidence": real.confidence,
        "reference_confidence": real.rows[experiments.REFERENCE_ROW]["confidence"],
    }
    return plot_interpolations(
        liu.autoencoder,
        latents,
        title="Held-out digits, autoencoder codes: linear vs matched through the AE-OT map",
        strip_caption="pairs of held-out digits of different classes (framed: t = 0.5)",
        grid_caption="4-point grids (corners: four held-out digits of different classes)",
    )


def _markdown(report, liu, liu_wide, agu, mismatch, real) -> str:
    s = report["settings"]
    t = report["timings"]
    b = s["budget"]
    lines = [
        "# latentot demo report",
        "",
        f"Command: `{report['command']}` (base seed {s['seed']}, {s['seeds']} seeds"
        f"{', fast budgets' if s['fast'] else ''}). Machine: {report['machine']['platform']}, "
        f"{report['machine']['cpu_count']} CPUs, jax {report['machine']['jax']} "
        f"({report['machine']['backend']}).",
        "",
        f"Time: {t['total']['wall_s']:.0f} s wall, {t['total']['cpu_s']:.0f} s CPU "
        "(per stage: "
        + ", ".join(
            f"{k} {v['wall_s']:.0f} s / {v['cpu_s']:.0f} s CPU" for k, v in t["stages"].items()
        )
        + ").",
        "",
        f"Data: scikit-learn digits, {s['split_sizes']['train']} train / "
        f"{s['split_sizes']['reference']} Fréchet reference / {s['split_sizes']['holdout']} "
        f"held out. Scorer: MLP classifier, {b['classifier_steps']} steps, accuracy "
        f"{report['scorer']['accuracy']:.3f} on held-out digits.",
        "",
        f"Budget: {json.dumps(b)}. Every row is scored on {b['n_samples']} images.",
        "",
        "## Liu et al. Table 1 analogue",
        "",
        liu.markdown(),
        "",
        f"AE-OT defaults used: {json.dumps(liu.settings.get('aeot_defaults', {}))}.",
        "",
        f"## The same at latent dimension {liu_wide.settings['latent_dim']}",
        "",
        liu_wide.markdown(),
        "",
        "## Agustsson et al. Table 2 analogue",
        "",
        agu.markdown(),
        "",
        "Δ IS: relative change of the mean inception score from the prior samples of the same "
        "generator.",
        "",
        "## The papers' claims, as measured",
        "",
        "| claim | source | holds | means | margin (in std) |",
        "|---|---|---|---|---|",
    ]
    for c in report["claims"]:
        margin = "—" if c["margin"] is None else f"{c['margin']:+.1f}"
        vals = " vs ".join(f"{v:.2f}" for v in c["values"])
        lines.append(
            f"| {c['claim']} | {c['source']} | {'yes' if c['holds'] else '**no**'} | "
            f"{vals} | {margin} |"
        )
    lines += ["", "## Mismatch statistics of midpoints (latentot.diagnostics)", ""]
    for rep in mismatch.values():
        lines += ["```", rep.format(), "```", ""]
    lines += [
        "## Interpolating real digits through the AE-OT map",
        "",
        f"Midpoints of {report['settings']['budget']['n_samples']} pairs of held-out digits of "
        "different classes, in the code space of the Liu table's first autoencoder (latent "
        "dimension 8): linear, SLERP about the codes' mean, and matched through its AE-OT "
        "sampler (`matched_lerp(sampler, y0, y1, 0.5)`), decoded. Confidence: the scoring "
        "classifier's mean largest class probability. "
        f"{100 * real.converged:.0f}% of the endpoint codes were inverted within the tolerance.",
        "",
        real.markdown(),
        "",
    ]
    lines += ["## Figures", ""]
    lines += [f"![{f}]({f})" for f in report["figures"]]
    lines.append("")
    return "\n".join(lines)
