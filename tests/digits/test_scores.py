"""Scores on known cases: closed forms, real versus noise, mode collapse."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from latentot.digits import models, scores


@pytest.fixture(scope="module")
def split():
    return models.split_digits(seed=0)


@pytest.fixture(scope="module")
def scorer(split):
    return scores.fit_scorer(
        jax.random.key(0), split.train_x, split.train_y, split.reference_x, split.reference_y
    )


# --------------------------------------------------------------------------------------------
# Pure score functions.


def test_inception_score_matches_direct_numpy():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(0.3 * np.ones(10), size=200)
    marginal = p.mean(axis=0)
    expected = np.exp(np.mean([np.sum(row * np.log(row / marginal)) for row in p]))
    assert scores.inception_score(p) == pytest.approx(expected, rel=1e-9)


def test_inception_score_extremes():
    one_hot_balanced = np.eye(10)[np.arange(100) % 10]
    assert scores.inception_score(one_hot_balanced) == pytest.approx(10.0, rel=1e-9)
    identical = np.tile(np.random.default_rng(1).dirichlet(np.ones(10)), (50, 1))
    assert scores.inception_score(identical) == pytest.approx(1.0, abs=1e-9)
    with pytest.raises(ValueError, match="probs"):
        scores.inception_score(np.ones(10))


def test_class_coverage_definition():
    balanced = np.arange(100) % 10
    assert scores.class_coverage(balanced) == 1.0
    assert scores.class_coverage(np.full(100, 3)) == pytest.approx(0.1)
    # Default threshold 1/20: a class with 5 of 100 predictions counts, one with 4 does not.
    labels = np.concatenate([np.zeros(91, int), np.full(5, 1), np.full(4, 2)])
    assert scores.class_coverage(labels) == pytest.approx(0.2)
    assert scores.class_coverage(labels, threshold=0.01) == pytest.approx(0.3)
    # Probabilities are reduced to their arg-max.
    assert scores.class_coverage(np.eye(10)[balanced]) == 1.0
    assert scores.class_coverage(np.arange(4) % 2, num_classes=2) == 1.0


def test_frechet_distance_closed_form_diagonal():
    rng = np.random.default_rng(2)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    a, b = rng.uniform(0.5, 2.0, size=5), rng.uniform(0.5, 2.0, size=5)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = scores.frechet_distance(mu1, np.diag(a), mu2, np.diag(b), eps=0.0)
    assert got == pytest.approx(expected, rel=1e-8)


def test_frechet_distance_of_identical_sets_is_zero():
    f = np.random.default_rng(3).normal(size=(100, 8))
    assert scores.frechet_distance_from_features(f, f) == pytest.approx(0.0, abs=1e-6)
    # Rank-deficient features (fewer samples than dimensions) stay finite thanks to the ridge.
    g = np.random.default_rng(4).normal(size=(5, 8))
    assert np.isfinite(scores.frechet_distance_from_features(g, f))


# --------------------------------------------------------------------------------------------
# The digits scorer.


def test_classifier_accuracy(scorer, split):
    assert scorer.accuracy >= 0.95
    assert models.accuracy(scorer.classifier, split.holdout_x, split.holdout_y) >= 0.95


def test_real_digits_beat_noise(scorer, split):
    n = split.holdout_x.shape[0]
    real = scorer.score(split.holdout_x)
    noise = scorer.score(jax.random.uniform(jax.random.key(1), (n, 64)))
    assert real.n == noise.n == n
    assert real.inception_score > 8.0
    assert real.inception_score > noise.inception_score + 3.0
    assert real.coverage == 1.0
    assert real.frechet_distance < 0.1 * noise.frechet_distance
    assert set(real.as_dict()) == {"inception_score", "frechet_distance", "coverage", "n"}


def test_fid_of_reference_digits_is_near_zero(scorer, split):
    # The reference set against its own statistics: zero up to the ridge.
    assert scorer.score(split.reference_x).frechet_distance < 1e-3


def test_mode_collapse_has_low_coverage_and_inception_score(scorer, split):
    threes = split.holdout_x[np.asarray(split.holdout_y) == 3]
    collapsed = jnp.tile(threes, (10, 1))[:300]
    s = scorer.score(collapsed)
    real = scorer.score(split.holdout_x)
    assert s.coverage <= 0.2
    assert s.inception_score < 1.5
    assert s.frechet_distance > 5 * real.frechet_distance


def test_scorer_accepts_image_grids(scorer, split):
    flat = scorer.score(split.holdout_x[:50])
    grid = scorer.score(split.holdout_x[:50].reshape(50, 8, 8))
    assert flat == grid
    assert scorer.features(split.holdout_x[:7]).shape == (7, scorer.classifier.feature_dim)
    probs = scorer.probabilities(split.holdout_x[:7])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_summarize_mean_and_std():
    runs = [scores.Scores(2.0, 1.0, 1.0, 10), scores.Scores(4.0, 3.0, 0.5, 10)]
    summary = scores.summarize(runs)
    assert summary["inception_score"] == pytest.approx((3.0, 1.0))
    assert summary["frechet_distance"] == pytest.approx((2.0, 1.0))
    assert summary["coverage"] == pytest.approx((0.75, 0.25))
    assert summary["n"] == pytest.approx((10.0, 0.0))
    with pytest.raises(ValueError):
        scores.summarize([])
