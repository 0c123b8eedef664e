"""Every model at its default budget generates digits the scorer recognises (slow: minutes)."""

import jax
import pytest

import latentot
from latentot.digits import models, scores

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def setting():
    split = models.split_digits(seed=0)
    scorer = scores.fit_scorer(
        jax.random.key(1), split.train_x, split.train_y, split.reference_x, split.reference_y
    )
    n = split.holdout_x.shape[0]
    noise = scorer.score(jax.random.uniform(jax.random.key(2), (n, 64)))
    return split, scorer, noise


def _check(scorer, noise, images):
    s = scorer.score(images)
    assert s.coverage >= 0.9
    assert s.inception_score > 6.0
    assert s.frechet_distance < 0.25 * noise.frechet_distance
    return s


def test_autoencoder_default_budget(setting):
    split, scorer, noise = setting
    ae, _ = models.train_autoencoder(jax.random.key(0), split.train_x)
    assert float(models.reconstruction_error(ae, split.holdout_x)) < 0.025
    _check(scorer, noise, ae(split.holdout_x))


def test_vae_default_budget(setting):
    split, scorer, noise = setting
    vae, _ = models.train_vae(jax.random.key(0), split.train_x)
    _check(scorer, noise, vae.sample(jax.random.key(3), split.holdout_x.shape[0]))


@pytest.mark.parametrize("prior", [latentot.Uniform(-1.0, 1.0), latentot.Gaussian()])
def test_wgan_gp_default_budget(setting, prior):
    split, scorer, noise = setting
    gen, _ = models.train_wgan_gp(jax.random.key(0), split.train_x, prior=prior)
    _check(scorer, noise, gen.sample(jax.random.key(3), split.holdout_x.shape[0]))
