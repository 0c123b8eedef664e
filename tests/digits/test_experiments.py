"""The table functions of latentot.digits.experiments at tiny budgets, and their building blocks."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

import latentot
from latentot import aeot
from latentot.diagnostics import ks_distance
from latentot.digits import demo, experiments, models, scores

TINY = experiments.Budget(
    classifier_steps=60,
    autoencoder_steps=20,
    vae_steps=20,
    gan_steps=10,
    aeot_steps=10,
    aeot_batch_size=128,
    latent_dim=4,
    gan_latent_dim=8,
    n_samples=100,
)


@pytest.fixture(scope="module")
def setting():
    split = models.split_digits(seed=0)
    scorer = scores.fit_scorer(
        jax.random.key(0),
        split.train_x,
        split.train_y,
        split.reference_x,
        split.reference_y,
        steps=TINY.classifier_steps,
    )
    return split, scorer


@pytest.fixture(scope="module")
def liu(setting):
    split, scorer = setting
    return experiments.liu_table(jax.random.key(1), split, scorer, seeds=2, budget=TINY)


@pytest.fixture(scope="module")
def agustsson(setting):
    split, scorer = setting
    return experiments.agustsson_table(jax.random.key(2), split, scorer, seeds=1, budget=TINY)


# --------------------------------------------------------------------------------------------
# Building blocks.


PRIORS = {"uniform": latentot.Uniform(-1.0, 1.0), "gaussian": latentot.Gaussian()}


@pytest.fixture(scope="module")
def midpoints():
    return {
        name: experiments.interpolation_midpoints(jax.random.key(0), prior, n=4000, dim=16)
        for name, prior in PRIORS.items()
    }


@pytest.mark.parametrize("name", list(PRIORS))
def test_interpolation_midpoints_laws(midpoints, name):
    prior, mids = PRIORS[name], midpoints[name]
    assert list(mids) == [
        "prior",
        "2-point linear",
        "2-point slerp",
        "2-point matched",
        "4-point linear",
        "4-point slerp",
        "4-point matched",
    ]
    for z in mids.values():
        assert z.shape == (4000, 16) and z.dtype == jnp.float32
        assert bool(jnp.all(jnp.isfinite(z)))
    ks = {k: float(ks_distance(z, prior)) for k, z in mids.items()}
    # 64,000 components: a sample of the prior has KS ≈ 0.0035; 0.01 is far in the tail.
    for k in ("prior", "2-point matched", "4-point matched"):
        assert ks[k] < 0.01, (k, ks[k])
    assert ks["2-point linear"] > 0.05
    assert ks["4-point linear"] > ks["2-point linear"]
    # Linear midpoints shrink the squared norm: by 1/2 (2 points) and 1/4 (4 points).
    sq = {k: float(jnp.mean(jnp.sum(z * z, -1))) for k, z in mids.items()}
    np.testing.assert_allclose(sq["2-point linear"] / sq["prior"], 0.5, rtol=0.05)
    np.testing.assert_allclose(sq["4-point linear"] / sq["prior"], 0.25, rtol=0.05)
    np.testing.assert_allclose(sq["4-point matched"] / sq["prior"], 1.0, rtol=0.05)


def test_interpolation_midpoints_uniform_support_and_law(midpoints):
    mids = midpoints["uniform"]
    for k in ("2-point matched", "4-point matched", "4-point linear"):
        assert float(jnp.max(jnp.abs(mids[k]))) <= 1.0
    # The 2-point linear midpoint of U(-1, 1) has the triangular law on [-1, 1].
    x = np.asarray(mids["2-point linear"])[:500].ravel()
    assert scipy.stats.kstest(x, scipy.stats.triang(0.5, loc=-1, scale=2).cdf).pvalue > 1e-3


def test_fit_gaussian_recovers_mean_and_covariance():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 3))
    cov = a @ a.T + np.eye(3)
    x = rng.multivariate_normal([1.0, -2.0, 0.5], cov, size=20_000).astype(np.float32)
    mean, chol = experiments.fit_gaussian(x)
    assert mean.dtype == jnp.float32 and chol.shape == (3, 3)
    np.testing.assert_allclose(mean, [1.0, -2.0, 0.5], atol=0.05)
    np.testing.assert_allclose(np.asarray(chol) @ np.asarray(chol).T, cov, rtol=0.05, atol=0.05)
    with pytest.raises(ValueError, match="codes"):
        experiments.fit_gaussian(np.zeros(5))


def _scores(*values):
    return tuple(scores.Scores(v, 10.0 - v, 1.0, 100) for v in values)


def test_table_summary_markdown_and_relative_change():
    table = experiments.Table(
        title="t",
        rows={"ref": _scores(8.0, 8.0), "base": _scores(4.0, 6.0), "mid": _scores(2.0, 3.0)},
        baselines={"mid": "base"},
        settings={"seeds": 2},
    )
    s = table.summary()
    assert s["base"]["inception_score"] == (5.0, 1.0)
    assert s["ref"]["inception_score"] == (8.0, 0.0)
    assert table.relative_change("mid") == pytest.approx(2.5 / 5.0 - 1.0)
    assert table.relative_change("base") is None
    md = table.markdown()
    assert "mean ± std over 2 seeds" in md
    assert "| base | 5.00 ± 1.00 |  | 5.00 ± 1.00 | 1.00 ± 0.00 |" in md
    assert "| mid | 2.50 ± 0.50 | -50% |" in md
    plain = dataclasses.replace(table, baselines={}).markdown()
    assert "Δ IS" not in plain and "| base | 5.00 ± 1.00 | 5.00 ± 1.00 | 1.00 ± 0.00 |" in plain
    d = json.loads(json.dumps(table.as_dict()))
    assert d["rows"]["mid"]["inception_change"] == pytest.approx(-0.5)
    assert [r["inception_score"] for r in d["rows"]["base"]["runs"]] == [4.0, 6.0]


def test_bad_arguments(setting):
    split, scorer = setting
    with pytest.raises(ValueError, match="seeds"):
        experiments.liu_table(jax.random.key(0), split, scorer, seeds=0, budget=TINY)
    too_many = dataclasses.replace(TINY, n_samples=10_000)
    with pytest.raises(ValueError, match="n_samples"):
        experiments.agustsson_table(jax.random.key(0), split, scorer, seeds=1, budget=too_many)


# --------------------------------------------------------------------------------------------
# The tables at tiny budgets.


@pytest.mark.heavy
def test_liu_table(liu, setting):
    table, first = liu
    split, scorer = setting
    assert list(table.rows) == [
        experiments.REFERENCE_ROW,
        "AE reconstructions of held-out digits",
        "(a) VAE, prior samples",
        "(b) Gaussian fit to AE codes",
        "(c) AE-OT on AE codes",
    ]
    for runs in table.rows.values():
        assert len(runs) == 2
        assert all(r.n == TINY.n_samples for r in runs)
        assert all(np.isfinite([r.inception_score, r.frechet_distance]).all() for r in runs)
    # The reference row is the same digits under the same scorer: no spread over seeds.
    ref = table.summary()[experiments.REFERENCE_ROW]
    assert ref["inception_score"][1] == 0.0
    assert ref["inception_score"][0] == pytest.approx(
        scorer.score(split.holdout_x[: TINY.n_samples]).inception_score
    )
    # Seeds retrain the models: the generated rows differ between seeds.
    vae_runs = table.rows["(a) VAE, prior samples"]
    assert vae_runs[0].frechet_distance != vae_runs[1].frechet_distance
    assert table.settings["budget"] == TINY.as_dict()
    assert isinstance(first.sampler, aeot.Sampler)
    assert first.codes.shape == (split.train_x.shape[0], TINY.latent_dim)
    for name, gen in first.generators().items():
        x = gen(jax.random.key(0), 7)
        assert x.shape == (7, 64), name
        assert float(jnp.min(x)) >= 0.0 and float(jnp.max(x)) <= 1.0
    json.dumps(table.as_dict())


def test_liu_table_is_deterministic(liu, setting):
    split, scorer = setting
    again, _ = experiments.liu_table(jax.random.key(1), split, scorer, seeds=1, budget=TINY)
    for name, runs in again.rows.items():
        assert runs[0] == liu[0].rows[name][0], name


def test_agustsson_table(agustsson):
    table, first = agustsson
    kinds = ["prior", *(f"{k}-point {m}" for k in (2, 4) for m in experiments.METHODS)]
    expected = [experiments.REFERENCE_ROW]
    expected += [f"{p} prior: {k}" for p in ("uniform", "Gaussian") for k in kinds]
    assert list(table.rows) == expected
    for name in expected[1:]:
        if name.endswith(": prior"):
            assert table.relative_change(name) is None
        else:
            assert table.baselines[name] == name.split(":")[0] + ": prior"
            change = table.relative_change(name)
            base = table.rows[table.baselines[name]][0].inception_score
            assert change == pytest.approx(table.rows[name][0].inception_score / base - 1)
    assert set(first.generators) == {"uniform", "Gaussian"}
    assert first.generators["uniform"].latent_dim == TINY.gan_latent_dim
    md = table.markdown()
    assert md.count("\n| ") == 1 + len(expected)


def test_claims_follow_the_numbers(liu, agustsson):
    out = demo.claims(liu[0], agustsson[0])
    assert len(out) == 2 + 2 * 2 * 2
    summary = liu[0].summary()
    first = out[0]
    ot = summary["(c) AE-OT on AE codes"]["inception_score"][0]
    vae = summary["(a) VAE, prior samples"]["inception_score"][0]
    assert first["values"] == [ot, vae]


def _with_inception(table, values):
    """``table`` with the inception scores of the named rows replaced (one value per seed)."""
    rows = {
        name: tuple(
            dataclasses.replace(s, inception_score=v)
            for s, v in zip(runs, values.get(name, [r.inception_score for r in runs]), strict=True)
        )
        for name, runs in table.rows.items()
    }
    return dataclasses.replace(table, rows=rows)


def test_claim_verdicts_and_margins_on_known_scores(liu, agustsson):
    ot, vae = "(c) AE-OT on AE codes", "(a) VAE, prior samples"
    cases = [
        # (AE-OT per seed, VAE per seed) -> (holds, margin in units of the larger spread)
        (([8.0, 9.0], [7.0, 7.0]), (True, 3.0)),  # means 8.5 vs 7, population std 0.5 and 0
        (([6.0, 6.0], [7.0, 8.0]), (False, -3.0)),
        (([7.0, 7.0], [7.0, 7.0]), (False, None)),  # a tie is not "higher"; no spread, no margin
    ]
    for (a, b), (holds, margin) in cases:
        table = _with_inception(liu[0], {ot: a, vae: b})
        claim = demo.claims(table, agustsson[0])[0]
        assert claim["claim"] == "AE-OT scores higher than the VAE"
        assert claim["values"] == [np.mean(a), np.mean(b)]
        assert claim["holds"] is holds
        assert claim["margin"] == (None if margin is None else pytest.approx(margin))


@pytest.mark.slow  # minutes of fitting and Newton on 2 cores: run with -m slow
def test_real_interpolation_table_and_figure(liu, setting, tmp_path):
    split, scorer = setting
    _, models_ = liu
    real = experiments.real_interpolation(jax.random.key(3), models_, split, scorer, n=60)
    rows = real.rows
    assert list(rows)[2:] == ["linear midpoints", "SLERP midpoints", "AE-OT matched midpoints"]
    for r in rows.values():
        assert r["n"] == 60 and np.isfinite(r["frechet_distance"]) and 0 < r["confidence"] <= 1
    assert 0.0 <= real.converged <= 1.0
    d = models_.codes.shape[1]
    assert all(v.shape == (4, 9, d) for v in real.strips.values())
    # Paths start and end at the given codes (matched: up to the round trip of T⁻¹).
    np.testing.assert_allclose(real.strips["matched"][:, 0], real.strips["linear"][:, 0], atol=0.5)
    # The confidence profile: one value per t, the same at the shared endpoints.
    assert all(np.shape(v) == (9,) and np.all((v > 0) & (v <= 1)) for v in real.confidence.values())
    for m in ("slerp", "matched"):
        np.testing.assert_allclose(
            real.confidence[m][[0, -1]], real.confidence["linear"][[0, -1]], atol=0.05
        )
    assert "| AE-OT matched midpoints |" in real.markdown()
    json.dumps(real.as_dict())
    from latentot._io import save_figure

    save_figure(demo.plot_real_interpolation(models_, real), tmp_path / "r.png")
    assert (tmp_path / "r.png").stat().st_size > 1000
