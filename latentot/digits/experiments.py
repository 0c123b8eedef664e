"""The two tables of the digits experiments, with mean ± std over seeds.

* :func:`liu_table`, the analogue of Liu et al.'s Table 1 (AE-OT against a VAE): scores of
  (a) a VAE decoded from prior samples, (b) a Gaussian fitted to an autoencoder's codes and
  decoded, (c) AE-OT (:func:`latentot.aeot.fit`) on the same codes, decoded.
* :func:`agustsson_table`, the analogue of Agustsson et al.'s Table 2: scores of the midpoints
  of 2-point and 4-point interpolation (linear, SLERP, matched) under a uniform-prior and a
  Gaussian-prior WGAN-GP generator, against the generators' prior samples.

Both tables carry held-out real digits as the reference row, and every row is scored by the same
:class:`latentot.digits.scores.DigitsScorer` on batches of the same size (the Fréchet distance is
biased by the batch size). Each seed retrains every model from its own key and draws its own
samples; the scorer (the measuring instrument) and the data split stay fixed, so the reference row
has zero spread. Budgets (training steps, latent sizes, batch size) are collected in
:class:`Budget`; :meth:`Budget.fast` is the seconds-long budget of the tests.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from latentot import aeot, ops
from latentot import priors as _priors
from latentot.digits import models, scores
from latentot.digits.budget import Budget
from latentot.matching import matched_combine, matched_lerp

__all__ = [
    "METHODS",
    "REFERENCE_ROW",
    "AgustssonModels",
    "Budget",
    "LiuModels",
    "RealInterpolation",
    "Table",
    "agustsson_table",
    "fit_gaussian",
    "interpolation_midpoints",
    "liu_table",
    "real_interpolation",
]

#: Interpolation methods of the Agustsson table.
METHODS = ("linear", "slerp", "matched")
#: Name of the reference row (held-out real digits) in both tables.
REFERENCE_ROW = "real digits (held out)"

#: A generator of images: ``(rng, n) -> [n, 64]``.
ImageSampler = Callable[[jax.Array, int], jax.Array]


@dataclasses.dataclass(frozen=True)
class Table:
    """Scores per row and seed, with mean ± std summaries and a markdown rendering.

    Attributes:
        title: caption of the table.
        rows: ``{row name: (Scores of seed 0, Scores of seed 1, ...)}`` in display order.
        baselines: ``{row name: baseline row}``: rows whose inception score is also shown as a
            relative change from their baseline (e.g. midpoints against prior samples).
        settings: the settings the table was measured with (JSON-ready).
    """

    title: str
    rows: Mapping[str, tuple[scores.Scores, ...]]
    baselines: Mapping[str, str] = dataclasses.field(default_factory=dict)
    settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def summary(self) -> dict[str, dict[str, tuple[float, float]]]:
        """``{row: {score: (mean, std)}}`` over seeds (see :func:`.scores.summarize`)."""
        return {name: scores.summarize(runs) for name, runs in self.rows.items()}

    def relative_change(self, row: str) -> float | None:
        """Relative change of the mean inception score of ``row`` from its baseline, or None."""
        base = self.baselines.get(row)
        if base is None:
            return None
        ref = scores.summarize(self.rows[base])["inception_score"][0]
        value = scores.summarize(self.rows[row])["inception_score"][0]
        return value / ref - 1.0

    def markdown(self) -> str:
        """The table in GitHub markdown: mean ± std of every score over the seeds."""
        summary = self.summary()
        seeds = max(len(r) for r in self.rows.values())
        delta = bool(self.baselines)  # the Δ IS column only when some row has a baseline
        lines = [
            f"**{self.title}** (mean ± std over {seeds} seed{'s' if seeds > 1 else ''})",
            "",
            "| | inception score ↑ |"
            + (" Δ IS |" if delta else "")
            + " Fréchet distance ↓ | coverage ↑ |",
            "|---|---|" + ("---|" if delta else "") + "---|---|",
        ]
        for name, s in summary.items():
            cells = [name, _pm(s["inception_score"], 2)]
            if delta:
                change = self.relative_change(name)
                cells.append("" if change is None else f"{100 * change:+.0f}%")
            cells += [_pm(s["frechet_distance"], 2), _pm(s["coverage"], 2)]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: the title, settings, per-seed scores, summaries and changes."""
        return {
            "title": self.title,
            "settings": dict(self.settings),
            "rows": {
                name: {
                    "runs": [s.as_dict() for s in runs],
                    "mean": {k: v[0] for k, v in scores.summarize(runs).items()},
                    "std": {k: v[1] for k, v in scores.summarize(runs).items()},
                    "baseline": self.baselines.get(name),
                    "inception_change": self.relative_change(name),
                }
                for name, runs in self.rows.items()
            },
        }


def _pm(mean_std: tuple[float, float], digits: int) -> str:
    mean, std = mean_std
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


# --------------------------------------------------------------------------------------------
# Liu et al., Table 1: VAE vs Gaussian fit vs AE-OT on autoencoder codes.


@dataclasses.dataclass(frozen=True)
class LiuModels:
    """The models of one seed of :func:`liu_table`.

    Attributes:
        autoencoder: the trained :class:`latentot.digits.models.Autoencoder`.
        vae: the trained :class:`latentot.digits.models.VAE`.
        codes: the autoencoder's codes of the training digits ``[N, latent_dim]``.
        gaussian: ``(mean [d], cholesky factor [d, d])`` of the Gaussian fitted to the codes.
        sampler: the AE-OT :class:`latentot.aeot.Sampler` fitted to the codes.
    """

    autoencoder: models.Autoencoder
    vae: models.VAE
    codes: jax.Array
    gaussian: tuple[jax.Array, jax.Array]
    sampler: aeot.Sampler

    def gaussian_codes(self, rng: jax.Array, n: int) -> jax.Array:
        """``n`` codes ``[n, d]`` drawn from the Gaussian fitted to the codes."""
        mean, chol = self.gaussian
        eps = jax.random.normal(rng, (n, mean.shape[0]), mean.dtype)
        return mean + eps @ chol.T

    def generators(self) -> dict[str, ImageSampler]:
        """``{row name: (rng, n) -> images [n, 64]}`` for the three generators of the table."""
        ae = self.autoencoder
        return {
            "(a) VAE, prior samples": self.vae.sample,
            "(b) Gaussian fit to AE codes": lambda r, n: ae.decode(self.gaussian_codes(r, n)),
            "(c) AE-OT on AE codes": lambda r, n: ae.decode(self.sampler.sample(r, n)),
        }


def fit_gaussian(codes: Any, *, ridge: float = 1e-6) -> tuple[jax.Array, jax.Array]:
    """Maximum-likelihood Gaussian of codes ``[N, d]``: ``(mean [d], Cholesky factor [d, d])``.

    The covariance is estimated in float64 with ``ridge`` times its mean variance added to the
    diagonal (so a degenerate code distribution still has a factor); the results have the codes'
    dtype.
    """
    c = np.asarray(codes, dtype=np.float64)
    if c.ndim != 2 or c.shape[0] < 2:
        raise ValueError(f"codes must be [N, d] with N >= 2, got shape {c.shape}")
    cov = np.cov(c, rowvar=False).reshape(c.shape[1], c.shape[1])
    cov += ridge * max(float(np.mean(np.diag(cov))), 1e-30) * np.eye(c.shape[1])
    dtype = jnp.asarray(codes).dtype
    return jnp.asarray(c.mean(axis=0), dtype), jnp.asarray(np.linalg.cholesky(cov), dtype)


def train_liu_models(
    rng: jax.Array,
    split: models.DigitsSplit,
    *,
    budget: Budget,
    latent_dim: int | None = None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> LiuModels:
    """Trains the autoencoder, the VAE, the Gaussian fit and AE-OT of one seed.

    ``latent_dim`` (default ``budget.latent_dim``) is that of the autoencoder and the VAE.
    ``log``, if given, is called with one line before each model.
    """
    say = log or _silent
    latent_dim = budget.latent_dim if latent_dim is None else latent_dim
    ae_rng, vae_rng, ot_rng = jax.random.split(rng, 3)
    say(f"autoencoder ({budget.autoencoder_steps} steps)")
    ae, _ = models.train_autoencoder(
        ae_rng,
        split.train_x,
        latent_dim=latent_dim,
        steps=budget.autoencoder_steps,
        progress=progress,
    )
    say(f"VAE ({budget.vae_steps} steps)")
    vae, _ = models.train_vae(
        vae_rng,
        split.train_x,
        latent_dim=latent_dim,
        steps=budget.vae_steps,
        progress=progress,
    )
    codes = ae.encode(split.train_x)
    say(f"AE-OT ({budget.aeot_steps} steps)")
    sampler = aeot.fit(
        ot_rng,
        codes,
        steps=budget.aeot_steps,
        batch_size=min(budget.aeot_batch_size, codes.shape[0]),
    )
    return LiuModels(ae, vae, codes, fit_gaussian(codes), sampler)


def liu_table(
    rng: jax.Array,
    split: models.DigitsSplit,
    scorer: scores.DigitsScorer,
    *,
    seeds: int = 3,
    budget: Budget | None = None,
    latent_dim: int | None = None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> tuple[Table, LiuModels]:
    """The Liu et al. Table 1 analogue: VAE vs Gaussian fit vs AE-OT on autoencoder codes.

    For each seed (key ``fold_in(rng, seed)``) the autoencoder, the VAE and AE-OT are trained
    from scratch and each generator is scored on ``budget.n_samples`` fresh images. Two reference
    rows are scored with the same batch size: held-out real digits, and the autoencoder's
    reconstructions of them (the best any sampler of the codes can do through this decoder).

    Args:
        rng: PRNG key of the whole table.
        split: the digits split; models train on ``split.train_x``.
        scorer: the scorer (fitted on the same split).
        seeds: number of seeds.
        budget: model sizes and steps (default :class:`Budget`).
        latent_dim: latent dimension of the autoencoder and the VAE (default
            ``budget.latent_dim``).
        progress: show progress bars.
        log: called with one line before each model and each scoring (e.g. ``print``).

    Returns:
        ``(table, models of the first seed)``.
    """
    budget = Budget() if budget is None else budget
    latent_dim = budget.latent_dim if latent_dim is None else latent_dim
    seeds = _check_seeds(seeds)
    holdout = _holdout(split, budget.n_samples)
    rows: dict[str, list[scores.Scores]] = {REFERENCE_ROW: []}
    recon_row = "AE reconstructions of held-out digits"
    first = None
    for seed in _seed_range(seeds, progress, "Liu table"):
        key = jax.random.fold_in(rng, seed)
        train_key, sample_key = jax.random.split(key)
        say = _prefixed(log, f"Liu table (d = {latent_dim}), seed {seed + 1}/{seeds}: ")
        liu = train_liu_models(
            train_key, split, budget=budget, latent_dim=latent_dim, progress=progress, log=say
        )
        say(f"scoring {budget.n_samples} images per row")
        if first is None:
            first = liu
        rows[REFERENCE_ROW].append(scorer.score(holdout))
        rows.setdefault(recon_row, []).append(scorer.score(liu.autoencoder(holdout)))
        gens = liu.generators()
        keys = jax.random.split(sample_key, len(gens))
        for k, (name, gen) in zip(keys, gens.items(), strict=True):
            rows.setdefault(name, []).append(scorer.score(gen(k, budget.n_samples)))
    table = Table(
        title="Liu et al. Table 1 analogue: sampling the latent space of an autoencoder"
        f" (latent dimension {latent_dim})",
        rows={k: tuple(v) for k, v in rows.items()},
        settings={
            "seeds": seeds,
            "latent_dim": latent_dim,
            "budget": budget.as_dict(),
            **_aeot_settings(),
        },
    )
    return table, first


def _aeot_settings() -> dict[str, Any]:
    """The AE-OT defaults in force (they are tuned elsewhere; record what was used)."""
    import inspect

    params = inspect.signature(aeot.fit).parameters
    keep = ("learning_rate", "lam", "penalty", "schedule")
    return {"aeot_defaults": {k: params[k].default for k in keep if k in params}}


# --------------------------------------------------------------------------------------------
# Agustsson et al., Table 2: midpoints of interpolations under fixed-prior generators.


def interpolation_midpoints(
    rng: jax.Array, prior: Any, *, n: int, dim: int, dtype: Any = jnp.float32
) -> dict[str, jax.Array]:
    """Prior samples and the midpoints of 2-point and 4-point interpolations.

    Draws four independent prior batches ``z0..z3`` ``[n, dim]``. The 2-point midpoints
    interpolate ``z0`` and ``z1`` at t = 1/2; the 4-point midpoints are the centre of the
    bilinear grid on the corners ``z0..z3`` (weights 1/4 each): linear is the mean, SLERP is
    applied along the rows and then between them (bilinear SLERP), matched is
    :func:`latentot.matched_combine`.

    Args:
        rng: PRNG key.
        prior: the latent prior.
        n: number of midpoints per kind.
        dim: latent dimension.
        dtype: floating dtype.

    Returns:
        ``{"prior", "2-point linear", "2-point slerp", "2-point matched", "4-point linear",
        "4-point slerp", "4-point matched"}`` → ``[n, dim]``. ``"prior"`` is ``z0``.
    """
    z = prior.sample(rng, (4, n, dim), dtype)
    half = jnp.asarray(0.5, z.dtype)
    quarter = jnp.full((4,), 0.25, z.dtype)
    return {
        "prior": z[0],
        "2-point linear": ops.lerp(z[0], z[1], half),
        "2-point slerp": ops.slerp(z[0], z[1], half),
        "2-point matched": matched_lerp(prior, z[0], z[1], half),
        "4-point linear": ops.combine(z, quarter),
        "4-point slerp": ops.slerp(ops.slerp(z[0], z[1], half), ops.slerp(z[2], z[3], half), half),
        "4-point matched": matched_combine(prior, z, quarter),
    }


@dataclasses.dataclass(frozen=True)
class AgustssonModels:
    """The generators of one seed of :func:`agustsson_table`: ``{prior name: Generator}``."""

    generators: Mapping[str, models.Generator]


#: The priors of the Agustsson table's generators (the paper: uniform and Gaussian priors).
def _table_priors() -> dict[str, Any]:
    return {"uniform": _priors.Uniform(-1.0, 1.0), "Gaussian": _priors.Gaussian()}


def agustsson_table(
    rng: jax.Array,
    split: models.DigitsSplit,
    scorer: scores.DigitsScorer,
    *,
    seeds: int = 3,
    budget: Budget | None = None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> tuple[Table, AgustssonModels]:
    """The Agustsson et al. Table 2 analogue: scores of interpolation midpoints.

    For each seed a WGAN-GP generator is trained on a Uniform(-1, 1) prior and one on a N(0, 1)
    prior (latent dimension ``budget.gan_latent_dim``); each decodes ``budget.n_samples`` prior
    samples and the midpoints of :func:`interpolation_midpoints`. Each midpoint row also reports
    the relative change of its inception score from the prior row of the same generator.

    Args:
        rng: PRNG key of the whole table.
        split: the digits split; generators train on ``split.train_x``.
        scorer: the scorer.
        seeds: number of seeds.
        budget: model sizes and steps (default :class:`Budget`).
        progress: show progress bars.
        log: called with one line before each generator (e.g. ``print``).

    Returns:
        ``(table, generators of the first seed)``.
    """
    budget = Budget() if budget is None else budget
    seeds = _check_seeds(seeds)
    holdout = _holdout(split, budget.n_samples)
    rows: dict[str, list[scores.Scores]] = {REFERENCE_ROW: []}
    baselines: dict[str, str] = {}
    first = None
    for seed in _seed_range(seeds, progress, "Agustsson table"):
        key = jax.random.fold_in(rng, seed)
        rows[REFERENCE_ROW].append(scorer.score(holdout))
        gens = {}
        for i, (pname, prior) in enumerate(_table_priors().items()):
            train_key, sample_key = jax.random.split(jax.random.fold_in(key, i))
            _prefixed(log, f"Agustsson table, seed {seed + 1}/{seeds}: ")(
                f"WGAN-GP, {pname} prior ({budget.gan_steps} steps), then scoring"
            )
            gen, _ = models.train_wgan_gp(
                train_key,
                split.train_x,
                prior=prior,
                latent_dim=budget.gan_latent_dim,
                steps=budget.gan_steps,
                progress=progress,
            )
            gens[pname] = gen
            mids = interpolation_midpoints(
                sample_key, prior, n=budget.n_samples, dim=budget.gan_latent_dim
            )
            for kind, z in mids.items():
                name = f"{pname} prior: {kind}"
                rows.setdefault(name, []).append(scorer.score(gen.decode(z)))
                if kind != "prior":
                    baselines[name] = f"{pname} prior: prior"
        if first is None:
            first = AgustssonModels(gens)
    table = Table(
        title="Agustsson et al. Table 2 analogue: scores of interpolation midpoints",
        rows={k: tuple(v) for k, v in rows.items()},
        baselines=baselines,
        settings={"seeds": seeds, "budget": budget.as_dict()},
    )
    return table, first


# --------------------------------------------------------------------------------------------
# Interpolating real digits: linear, SLERP and AE-OT-matched paths between held-out codes.

#: The code-space interpolations of :func:`real_interpolation`.
REAL_METHODS = ("linear", "slerp", "matched")


@dataclasses.dataclass(frozen=True)
class RealInterpolation:
    """Midpoints of held-out digits of different classes, in an autoencoder's code space.

    Attributes:
        rows: ``{row: {"frechet_distance", "confidence", "n"}}``: the reference rows (held-out
            digits, their reconstructions) and the midpoints of each method, decoded.
        converged: fraction of the endpoint codes whose preimage under the AE-OT map was found
            within the tolerance (:meth:`latentot.aeot.Sampler.inverse_transport`).
        strips: ``{method: [pairs, steps, d]}`` codes of a few paths, for the figure.
        confidence: ``{method: [steps]}`` the classifier's mean confidence on the decoded paths
            of the first :data:`PROFILE_PAIRS` pairs, along t.
        corners: ``[4, d]`` codes of four held-out digits of different classes (a grid's).
        mean: ``[d]`` the training codes' mean (SLERP's centre).
        t: ``[steps]``.
    """

    rows: Mapping[str, Mapping[str, float]]
    converged: float
    strips: Mapping[str, Any]
    confidence: Mapping[str, Any]
    corners: Any
    mean: Any
    t: Any

    def markdown(self) -> str:
        """The table in GitHub markdown."""
        lines = [
            "| | Fréchet distance ↓ | classifier confidence ↑ |",
            "|---|---|---|",
        ]
        for name, r in self.rows.items():
            lines.append(f"| {name} | {r['frechet_distance']:.2f} | {r['confidence']:.3f} |")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        """The rows and the converged fraction (JSON-ready)."""
        return {
            "rows": {k: dict(v) for k, v in self.rows.items()},
            "converged": self.converged,
            "confidence": {k: [float(c) for c in v] for k, v in self.confidence.items()},
            "t": [float(t) for t in self.t],
        }


#: :func:`real_interpolation` follows the classifier's confidence along the whole paths of this
#: many pairs (the figure's bottom-left panel).
PROFILE_PAIRS = 64


def _code_paths(sampler, mean, y0, y1, t):
    """``{method: [steps, ..., d]}``: linear, SLERP about the codes' mean, matched by AE-OT."""
    tt = t.reshape(-1, *(1,) * (y0.ndim - 1))  # against the leading axes of y0
    return {
        "linear": ops.lerp(y0, y1, tt),
        "slerp": mean + ops.slerp(y0 - mean, y1 - mean, tt),
        "matched": jax.vmap(lambda s: matched_lerp(sampler, y0, y1, s))(t),
    }


def real_interpolation(
    rng: jax.Array,
    liu: LiuModels,
    split: models.DigitsSplit,
    scorer: scores.DigitsScorer,
    *,
    n: int,
    pairs: int = 4,
    steps: int = 9,
) -> RealInterpolation:
    """Interpolates held-out digits of different classes in the autoencoder's code space.

    ``n`` random pairs of held-out digits with different labels are encoded; their midpoints
    (t = ½) are computed linearly, by SLERP about the codes' mean and matched through the
    AE-OT sampler (``matched_lerp(sampler, y₀, y₁, ½)`` = ``T(matched_lerp(prior, T⁻¹(y₀),
    T⁻¹(y₁), ½))``), decoded and scored: Fréchet distance to the reference digits and the
    classifier's mean confidence (largest class probability). The first ``pairs`` pairs also
    give whole paths, and four digits of different classes the corners of a grid.
    """
    ae, sampler = liu.autoencoder, liu.sampler
    x, labels = split.holdout_x, np.asarray(split.holdout_y)
    gen = np.random.default_rng(np.asarray(jax.random.randint(rng, (), 0, 2**30)).item())
    i = gen.integers(len(labels), size=4 * n)
    j = gen.integers(len(labels), size=4 * n)
    keep = labels[i] != labels[j]
    i, j = i[keep][:n], j[keep][:n]
    y0, y1 = ae.encode(x[i]), ae.encode(x[j])
    _, info = sampler.inverse_transport(jnp.stack([y0, y1]), return_info=True)
    mean = jnp.mean(liu.codes, axis=0)
    mids = {m: v[0] for m, v in _code_paths(sampler, mean, y0, y1, jnp.full((1,), 0.5)).items()}

    def row(images):
        p = scorer.probabilities(images)
        s = scorer.score(images)
        return {
            "frechet_distance": s.frechet_distance,
            "confidence": float(np.mean(np.max(p, axis=-1))),
            "n": s.n,
        }

    rows = {
        REFERENCE_ROW: row(x[:n]),
        "AE reconstructions of held-out digits": row(ae(x[:n])),
    }
    names = {"linear": "linear midpoints", "slerp": "SLERP midpoints"}
    names["matched"] = "AE-OT matched midpoints"
    for m in REAL_METHODS:
        rows[names[m]] = row(ae.decode(mids[m]))
    t = jnp.linspace(0.0, 1.0, steps, dtype=jnp.float32)
    many = max(pairs, min(n, PROFILE_PAIRS))
    paths = _code_paths(sampler, mean, y0[:many], y1[:many], t)  # {m: [steps, many, d]}
    strips = {m: jnp.swapaxes(v[:, :pairs], 0, 1) for m, v in paths.items()}
    confidence = {
        m: np.max(scorer.probabilities(ae.decode(v.reshape(-1, v.shape[-1]))), axis=-1)
        .reshape(steps, -1)
        .mean(axis=-1)
        for m, v in paths.items()
    }
    first = [int(np.flatnonzero(labels == c)[0]) for c in gen.permutation(10)[:4]]
    corners = ae.encode(x[np.asarray(first)])
    return RealInterpolation(
        rows=rows,
        converged=float(np.mean(np.asarray(info.converged))),
        strips=strips,
        confidence=confidence,
        corners=corners,
        mean=mean,
        t=t,
    )


# --------------------------------------------------------------------------------------------
# Helpers.


def _check_seeds(seeds: int) -> int:
    if isinstance(seeds, bool) or not isinstance(seeds, (int, np.integer)) or seeds < 1:
        raise ValueError(f"seeds must be a positive integer, got {seeds!r}")
    return int(seeds)


def _holdout(split: models.DigitsSplit, n: int) -> jax.Array:
    available = split.holdout_x.shape[0]
    if not 2 <= n <= available:
        raise ValueError(f"budget.n_samples must be in [2, {available}] (the holdout), got {n}")
    return split.holdout_x[:n]


def _silent(_message: str) -> None:
    pass


def _prefixed(log: Callable[[str], None] | None, prefix: str) -> Callable[[str], None]:
    if log is None:
        return _silent
    return lambda message: log(prefix + message)


def _seed_range(seeds: int, progress: bool, desc: str) -> Sequence[int]:
    if not progress:
        return range(seeds)
    from tqdm.auto import tqdm

    return tqdm(range(seeds), desc=desc, leave=False)
