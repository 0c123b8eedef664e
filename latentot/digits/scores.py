"""Sample-quality scores for digits, computed with a classifier trained in-process.

Nothing is downloaded: :func:`fit_scorer` trains a small MLP classifier
(:class:`latentot.digits.models.Classifier`) on the training digits and keeps the penultimate-layer
features of held-out *reference* digits. A batch of images ``[n, 64]`` in [0, 1] then gets:

* **inception score** (Salimans et al., 2016, with the digits classifier in place of
  Inception): ``IS = exp(E_x KL(p(y|x) ‖ p(y)))``, ``p(y) = E_x p(y|x)`` estimated on the batch.
  It lies in ``[1, num_classes]``: high when every image is confidently one class and the
  classes are balanced; 1 when all images get the same class distribution (e.g. mode collapse).
* **Fréchet distance** (Heusel et al., 2017, "FID" with the digits classifier's features):
  ``‖μ₁ - μ₂‖² + tr(Σ₁ + Σ₂ - 2 (Σ₁ Σ₂)^½)`` between Gaussians fitted to the features of the
  batch and of the reference digits; ``εI`` is added to both covariances before the matrix
  square root (``scipy.linalg.sqrtm``), whose real part is kept. Lower is better. It is biased
  upwards for small batches, so compare batches of equal size.
* **class coverage**: the fraction of the ``num_classes`` classes that receive at least a
  share ``threshold`` of the batch's arg-max predictions; the default threshold is
  ``1 / (2 · num_classes)`` (half the share of a balanced batch), so a balanced sample covers
  1.0 and a sample collapsed onto one digit covers ``1 / num_classes``.

Every table carries held-out real digits as its reference row: score
:attr:`latentot.digits.models.DigitsSplit.holdout_x` (disjoint from both the classifier's training
digits and the Fréchet reference) with the same scorer, using the same batch size for every row.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

from latentot.digits.budget import Budget
from latentot.digits.models.classifier import Classifier, accuracy, train_classifier

__all__ = [
    "DigitsScorer",
    "Scores",
    "class_coverage",
    "feature_statistics",
    "fit_scorer",
    "frechet_distance",
    "frechet_distance_from_features",
    "inception_score",
    "summarize",
]


def inception_score(probs: Any, *, eps: float = 1e-12) -> float:
    """``exp(E_x KL(p(y|x) ‖ p(y)))`` of class probabilities.

    Args:
        probs: ``[n, num_classes]``, rows p(y|x) summing to one.
        eps: floor inside the logarithms (so zero probabilities contribute zero).

    Returns:
        The score, in ``[1, num_classes]``.
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] == 0:
        raise ValueError(f"probs must be [n, num_classes] with n > 0, got shape {p.shape}")
    marginal = p.mean(axis=0)
    kl = np.sum(p * (np.log(p + eps) - np.log(marginal + eps)), axis=1)
    return float(np.exp(kl.mean()))


def class_coverage(
    predictions: Any, *, num_classes: int = 10, threshold: float | None = None
) -> float:
    """Fraction of classes that receive at least a share ``threshold`` of the predictions.

    Args:
        predictions: integer class predictions ``[n]``, or class probabilities
            ``[n, num_classes]`` (their arg-max is used).
        num_classes: number of classes.
        threshold: minimum share of the ``n`` predictions for a class to count as covered;
            default ``1 / (2 · num_classes)``.

    Returns:
        The number of covered classes divided by ``num_classes``, in ``[0, 1]``.
    """
    pred = np.asarray(predictions)
    if pred.ndim == 2:
        pred = pred.argmax(axis=1)
    if pred.ndim != 1 or pred.shape[0] == 0:
        raise ValueError(f"predictions must be [n] or [n, num_classes], got shape {pred.shape}")
    if threshold is None:
        threshold = 1.0 / (2 * num_classes)
    share = np.bincount(pred.astype(np.int64), minlength=num_classes)[:num_classes] / pred.size
    return float(np.mean(share >= threshold))


def feature_statistics(features: Any) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[d]`` and covariance ``[d, d]`` (float64, unbiased) of features ``[n, d]``."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"features must be [n, d] with n >= 2, got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def frechet_distance(mu1: Any, cov1: Any, mu2: Any, cov2: Any, *, eps: float = 1e-6) -> float:
    """Fréchet distance between N(mu1, cov1) and N(mu2, cov2).

    ``‖mu1 - mu2‖² + tr(cov1 + cov2 - 2 ((cov1 + εI)(cov2 + εI))^½)``: the square root is
    ``scipy.linalg.sqrtm`` of the product of the regularised covariances, and its real part is
    kept (round-off gives it tiny imaginary parts).

    Args:
        mu1: mean ``[d]``.
        cov1: covariance ``[d, d]``.
        mu2: mean ``[d]``.
        cov2: covariance ``[d, d]``.
        eps: the ridge ε added to both covariances before the square root.

    Returns:
        The distance (non-negative up to round-off; clipped at 0).
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    cov1, cov2 = np.asarray(cov1, np.float64), np.asarray(cov2, np.float64)
    ridge = eps * np.eye(cov1.shape[0])
    covmean = scipy.linalg.sqrtm((cov1 + ridge) @ (cov2 + ridge))
    covmean = np.real(covmean)
    diff = mu1 - mu2
    value = diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * np.trace(covmean)
    return float(max(value, 0.0))


def frechet_distance_from_features(features1: Any, features2: Any, *, eps: float = 1e-6) -> float:
    """Fréchet distance between Gaussians fitted to features ``[n1, d]`` and ``[n2, d]``."""
    return frechet_distance(*feature_statistics(features1), *feature_statistics(features2), eps=eps)


@dataclasses.dataclass(frozen=True)
class Scores:
    """Scores of one batch of images.

    Attributes:
        inception_score: ``exp(E KL(p(y|x) ‖ p(y)))``, higher is better (at most 10).
        frechet_distance: Fréchet distance to the reference features, lower is better.
        coverage: fraction of classes covered, higher is better (at most 1).
        n: number of images scored.
    """

    inception_score: float
    frechet_distance: float
    coverage: float
    n: int

    def as_dict(self) -> dict[str, float | int]:
        """The scores as a plain dict (JSON-ready)."""
        return dataclasses.asdict(self)


def summarize(runs: Any) -> dict[str, tuple[float, float]]:
    """Mean and standard deviation of each score over runs (e.g. seeds).

    Args:
        runs: a non-empty sequence of :class:`Scores`.

    Returns:
        ``{"inception_score": (mean, std), "frechet_distance": ..., "coverage": ...,
        "n": ...}``; ``std`` is the population standard deviation (0 for a single run).
    """
    runs = list(runs)
    if not runs:
        raise ValueError("summarize needs at least one Scores")
    out = {}
    for field in dataclasses.fields(Scores):
        values = np.array([getattr(r, field.name) for r in runs], dtype=np.float64)
        out[field.name] = (float(values.mean()), float(values.std()))
    return out


@dataclasses.dataclass(frozen=True)
class DigitsScorer:
    """A trained digits classifier plus the Fréchet reference statistics.

    Build it with :func:`fit_scorer`.

    Attributes:
        classifier: the trained :class:`latentot.digits.models.Classifier`.
        reference_mean: mean ``[d]`` of the reference digits' features.
        reference_cov: covariance ``[d, d]`` of the reference digits' features.
        accuracy: the classifier's accuracy on the reference digits (held out from training).
        eps: the ridge ε of the Fréchet distance.
        coverage_threshold: share a class needs to count as covered (see
            :func:`class_coverage`).
    """

    classifier: Classifier
    reference_mean: np.ndarray
    reference_cov: np.ndarray
    accuracy: float
    eps: float = 1e-6
    coverage_threshold: float | None = None

    @property
    def num_classes(self) -> int:
        """Number of classes of the classifier."""
        return self.classifier.num_classes

    def features(self, images: Any) -> np.ndarray:
        """Classifier features ``[n, d]`` of images ``[n, 64]``."""
        return np.asarray(self.classifier.features(_as_images(images)))

    def probabilities(self, images: Any) -> np.ndarray:
        """Class probabilities ``[n, num_classes]`` of images ``[n, 64]``."""
        return np.asarray(self.classifier.probabilities(_as_images(images)))

    def score(self, images: Any) -> Scores:
        """Scores images ``[n, 64]`` (values in [0, 1]; ``[n, 8, 8]`` is accepted too)."""
        x = _as_images(images)
        features = self.classifier.features(x)
        probs = np.asarray(jax.nn.softmax(self.classifier.head(features), axis=-1))
        return Scores(
            inception_score=inception_score(probs),
            frechet_distance=frechet_distance(
                *feature_statistics(features),
                self.reference_mean,
                self.reference_cov,
                eps=self.eps,
            ),
            coverage=class_coverage(
                probs, num_classes=self.num_classes, threshold=self.coverage_threshold
            ),
            n=int(x.shape[0]),
        )


def _as_images(images: Any) -> jax.Array:
    x = jnp.asarray(images)
    if x.ndim == 3:
        x = x.reshape(x.shape[0], -1)
    if x.ndim != 2:
        raise ValueError(f"images must be [n, pixels] or [n, h, w], got shape {x.shape}")
    return x.astype(jnp.float32)


def fit_scorer(
    rng: jax.Array,
    train_x: Any,
    train_y: Any,
    reference_x: Any,
    reference_y: Any,
    *,
    steps: int = Budget.classifier_steps,
    eps: float = 1e-6,
    coverage_threshold: float | None = None,
    progress: bool = False,
    **classifier_kwargs: Any,
) -> DigitsScorer:
    """Trains the digits classifier and fixes the Fréchet reference.

    Args:
        rng: PRNG key of the classifier's training.
        train_x: training images ``[n, 64]`` in [0, 1].
        train_y: training labels ``[n]``.
        reference_x: held-out images ``[m, 64]``: the Fréchet reference, and the accuracy check.
        reference_y: their labels ``[m]``.
        steps: classifier optimiser steps (default: ``Budget().classifier_steps``; a test
            passes ``Budget.fast().classifier_steps``).
        eps: ridge ε of the Fréchet distance.
        coverage_threshold: see :func:`class_coverage`; default ``1 / (2 · num_classes)``.
        progress: show a progress bar.
        **classifier_kwargs: further keyword arguments of
            :func:`latentot.digits.models.train_classifier`.

    Returns:
        The :class:`DigitsScorer`; its ``accuracy`` is measured on ``reference_x``.
    """
    classifier, _ = train_classifier(
        rng,
        _as_images(train_x),
        jnp.asarray(train_y),
        steps=steps,
        progress=progress,
        **classifier_kwargs,
    )
    ref = _as_images(reference_x)
    mean, cov = feature_statistics(classifier.features(ref))
    return DigitsScorer(
        classifier=classifier,
        reference_mean=mean,
        reference_cov=cov,
        accuracy=accuracy(classifier, ref, jnp.asarray(reference_y)),
        eps=eps,
        coverage_threshold=coverage_threshold,
    )
