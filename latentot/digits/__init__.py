"""The digits demo: small models, scores and the papers' tables in miniature.

Everything here runs on the 1797 scikit-learn digits, in-process and offline, and exists to show
the library at work; the library itself (:mod:`latentot`) never imports this package.

* :mod:`latentot.digits.models`: autoencoder, VAE, WGAN-GP and classifier, one training loop.
* :mod:`latentot.digits.scores`: inception score, Fréchet distance and coverage for digits.
* :mod:`latentot.digits.experiments`: Liu et al. Table 1 and Agustsson et al. Table 2 in
  miniature, under one :class:`~latentot.digits.experiments.Budget`.
* :mod:`latentot.digits.demo`: the pipeline behind ``latentot demo`` (figures and a report).

Needs the ``demo`` extra (matplotlib, scikit-learn).
"""
