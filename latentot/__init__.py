"""latentot: optimal-transport tools for the latent spaces of generative models.

* Priors (:mod:`latentot.priors`) and the raw latent operations (:mod:`latentot.ops`), with
  keyframe paths (:mod:`latentot.splines`).
* Matched operations (:mod:`latentot.matching`) built on the monotone transport maps of
  :mod:`latentot.transport` (Agustsson et al.), tabulated fast by FFT convolution
  (:mod:`latentot.convolution`).
* Cauchy-linear interpolations (:mod:`latentot.cauchy`, Leśniak et al.).
* Mismatch statistics and figures (:mod:`latentot.diagnostics`).
* The AE-OT sampler (:mod:`latentot.aeot`, Liu et al.).
"""

from latentot.cauchy import cauchy_lerp, spherical_cauchy_lerp
from latentot.matching import (
    LatentMap,
    matched_analogy,
    matched_combine,
    matched_grid,
    matched_lerp,
    matched_mean,
    matched_random_walk,
    matched_spline,
    matched_subspace,
    matched_vicinity,
)
from latentot.ops import analogy, combine, grid, lerp, random_walk, slerp, vicinity
from latentot.priors import Cauchy, Gaussian, Laplace, Logistic, Prior, Uniform
from latentot.splines import spline
from latentot.transport import TransportMap, transport_map

__all__ = [
    "Cauchy",
    "Gaussian",
    "Laplace",
    "LatentMap",
    "Logistic",
    "Prior",
    "TransportMap",
    "Uniform",
    "analogy",
    "cauchy_lerp",
    "combine",
    "grid",
    "lerp",
    "matched_analogy",
    "matched_combine",
    "matched_grid",
    "matched_lerp",
    "matched_mean",
    "matched_random_walk",
    "matched_spline",
    "matched_subspace",
    "matched_vicinity",
    "random_walk",
    "slerp",
    "spherical_cauchy_lerp",
    "spline",
    "transport_map",
    "vicinity",
]


def _version() -> str:
    # pyproject.toml's version, through the installed package's metadata (the one source).
    from importlib import metadata

    try:
        return metadata.version("latentot")
    except metadata.PackageNotFoundError:  # a source tree that is not installed
        return "0+unknown"


__version__ = _version()
