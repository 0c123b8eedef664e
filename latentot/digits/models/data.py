"""The scikit-learn digits, scaled to [0, 1] and split three ways.

``sklearn.datasets.load_digits`` ships inside scikit-learn (1797 images of 8×8 pixels with
integer values 0..16), so nothing is downloaded. The images are flattened to 64 pixels and
divided by 16.

The split has three disjoint, class-stratified parts:

* ``train``: fits the generative models and the scoring classifier;
* ``reference``: held-out digits whose classifier features are the Fréchet reference;
* ``holdout``: further held-out digits, scored like a generator's samples; they are the
  "real digits" reference row of every table (the score a perfect generator would get).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

__all__ = ["IMAGE_SHAPE", "NUM_CLASSES", "NUM_PIXELS", "DigitsSplit", "load_digits", "split_digits"]

IMAGE_SHAPE = (8, 8)
NUM_PIXELS = 64
NUM_CLASSES = 10


def load_digits(*, dtype=jnp.float32) -> tuple[jnp.ndarray, jnp.ndarray]:
    """All 1797 digits.

    Args:
        dtype: floating dtype of the images.

    Returns:
        ``(x, y)``: images ``[1797, 64]`` in [0, 1] and labels ``[1797]`` (int32, 0..9).
    """
    from sklearn.datasets import load_digits as _load

    bunch = _load()
    x = np.asarray(bunch.data, dtype=np.float64) / 16.0
    y = np.asarray(bunch.target, dtype=np.int32)
    return jnp.asarray(x, dtype=dtype), jnp.asarray(y)


@dataclasses.dataclass(frozen=True)
class DigitsSplit:
    """Three disjoint parts of the digits; images ``[n, 64]`` in [0, 1], labels ``[n]``."""

    train_x: jnp.ndarray
    train_y: jnp.ndarray
    reference_x: jnp.ndarray
    reference_y: jnp.ndarray
    holdout_x: jnp.ndarray
    holdout_y: jnp.ndarray


def split_digits(
    *, seed: int = 0, n_reference: int = 300, n_holdout: int = 300, dtype=jnp.float32
) -> DigitsSplit:
    """Splits the digits into train / reference / holdout, stratified by class.

    Each class contributes to ``reference`` and ``holdout`` in proportion to its size (rounded
    so the totals are exact); the rest is ``train``. Rows are shuffled within each part.

    Args:
        seed: seed of the numpy generator that shuffles (the split is deterministic given it).
        n_reference: size of the reference part.
        n_holdout: size of the holdout part.
        dtype: floating dtype of the images.

    Returns:
        The :class:`DigitsSplit`; with the defaults, 1197 / 300 / 300 images.
    """
    x, y = load_digits(dtype=dtype)
    y_np = np.asarray(y)
    n = y_np.shape[0]
    if n_reference < 0 or n_holdout < 0 or n_reference + n_holdout >= n:
        raise ValueError(
            f"n_reference + n_holdout must be below {n}, got {n_reference} + {n_holdout}"
        )
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[], [], []]
    classes = np.unique(y_np)
    counts = np.array([np.sum(y_np == c) for c in classes])
    quotas = []
    for size in (n_reference, n_holdout):
        quota = np.floor(counts * size / n).astype(int)
        # Largest remainders take the leftover places, so the totals are exact.
        remainder = counts * size / n - quota
        quota[np.argsort(-remainder, kind="stable")[: size - quota.sum()]] += 1
        quotas.append(quota)
    for c, q_ref, q_hold in zip(classes, *quotas, strict=True):
        idx = rng.permutation(np.flatnonzero(y_np == c))
        parts[1].append(idx[:q_ref])
        parts[2].append(idx[q_ref : q_ref + q_hold])
        parts[0].append(idx[q_ref + q_hold :])
    out = []
    for part in parts:
        idx = rng.permutation(np.concatenate(part))
        out += [x[idx], y[idx]]
    return DigitsSplit(*out)
