"""Small Flax NNX models for the digits, trainable on a CPU in seconds to minutes.

* :class:`Autoencoder` / :func:`train_autoencoder`: the deterministic autoencoder whose latent
  codes AE-OT models.
* :class:`VAE` / :func:`train_vae`: a VAE with prior N(0, I), decoded from prior samples.
* :class:`Generator` / :func:`train_wgan_gp`: a WGAN-GP generator for any latentot prior (e.g.
  ``latentot.Uniform(-1, 1)`` or ``latentot.Gaussian()``).
* :class:`Classifier` / :func:`train_classifier`: the digits classifier behind
  :mod:`latentot.digits.scores`.
* :func:`split_digits`: the scikit-learn digits in [0, 1], split train / reference / holdout.

Every generative model exposes ``latent_dim``, ``prior``, ``decode(z) -> [n, 64]`` and
``sample(rng, n) -> [n, 64]`` (the autoencoder has ``latent_dim``, ``encode`` and ``decode``).
Every ``train_*`` function takes ``rng`` first and keyword-only hyperparameters, takes its
default ``steps`` from :class:`latentot.digits.budget.Budget` (``Budget.fast()`` holds the
seconds-long budget of the tests), and returns ``(model, history)`` with ``history`` a dict of
numpy arrays ``[steps]``; it is deterministic given ``rng``. All of them run one training loop
(:func:`latentot.digits.models.training.run_steps`), compiled once per configuration.
"""

from latentot.digits.models.autoencoder import Autoencoder, reconstruction_error, train_autoencoder
from latentot.digits.models.classifier import Classifier, accuracy, train_classifier
from latentot.digits.models.data import (
    IMAGE_SHAPE,
    NUM_CLASSES,
    NUM_PIXELS,
    DigitsSplit,
    load_digits,
    split_digits,
)
from latentot.digits.models.gan import Critic, Generator, train_wgan_gp
from latentot.digits.models.mlp import MLP
from latentot.digits.models.vae import VAE, train_vae

__all__ = [
    "IMAGE_SHAPE",
    "MLP",
    "NUM_CLASSES",
    "NUM_PIXELS",
    "VAE",
    "Autoencoder",
    "Classifier",
    "Critic",
    "DigitsSplit",
    "Generator",
    "accuracy",
    "load_digits",
    "reconstruction_error",
    "split_digits",
    "train_autoencoder",
    "train_classifier",
    "train_vae",
    "train_wgan_gp",
]
