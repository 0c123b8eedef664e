"""The digits split: sizes, range, disjointness, stratification, determinism."""

import numpy as np

from latentot.digits import models


def test_split_sizes_range_and_stratification():
    s = models.split_digits(seed=0)
    assert s.train_x.shape == (1197, 64)
    assert s.reference_x.shape == (300, 64) and s.holdout_x.shape == (300, 64)
    for x in (s.train_x, s.reference_x, s.holdout_x):
        assert x.dtype == np.float32
        assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    for y in (s.reference_y, s.holdout_y):
        counts = np.bincount(np.asarray(y), minlength=10)
        assert counts.min() >= 28 and counts.max() <= 32


def test_split_is_disjoint_and_complete():
    s = models.split_digits(seed=1)
    x_all, _ = models.load_digits()
    parts = [np.asarray(p) for p in (s.train_x, s.reference_x, s.holdout_x)]
    rows = {r.tobytes() for r in np.concatenate(parts)}
    assert len(rows) == len({r.tobytes() for r in np.asarray(x_all)})
    assert sum(p.shape[0] for p in parts) == x_all.shape[0]


def test_split_is_deterministic_given_seed():
    a, b, c = (models.split_digits(seed=k) for k in (5, 5, 6))
    np.testing.assert_array_equal(a.holdout_x, b.holdout_x)
    assert not np.array_equal(a.holdout_x, c.holdout_x)
