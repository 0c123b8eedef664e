"""latentot: optimal-transport tools for the latent spaces of generative models."""

from latentot.priors import Cauchy, Gaussian, Laplace, Logistic, Prior, Uniform

__all__ = ["Cauchy", "Gaussian", "Laplace", "Logistic", "Prior", "Uniform"]
__version__ = "0.1.0"
