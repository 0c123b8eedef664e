"""The scores of benchmarks/aeot_real_data.py against independent references."""

import importlib.util
import pathlib
import sys

import numpy as np
import pytest
from scipy import stats

_PATH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "aeot_real_data.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("aeot_real_data", _PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_ks_statistic_matches_scipy(bench):
    rng = np.random.default_rng(0)
    for a, b in [
        (rng.standard_normal(500), rng.standard_normal(700) + 0.2),
        (rng.standard_t(3, 300), rng.laplace(size=300)),
        (np.round(rng.standard_normal(400), 1), np.round(rng.standard_normal(350), 1)),  # ties
    ]:
        want = stats.ks_2samp(a, b).statistic
        assert bench.ks_statistic(a, b) == pytest.approx(want, abs=1e-12)


def test_energy_distance_matches_scipy_in_1d(bench):
    # scipy's energy_distance is sqrt(2 E|X-Y| - E|X-X'| - E|Y-Y'|) with V-statistics within;
    # ours uses U-statistics within, so compare with the V-statistic correction undone.
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((300, 1)), rng.standard_normal((400, 1)) + 0.5
    ours = bench.energy_distance(x, y)
    n, m = len(x), len(y)
    dxx = np.abs(x - x.T).mean() * n / (n - 1)
    dyy = np.abs(y - y.T).mean() * m / (m - 1)
    ref = stats.energy_distance(x[:, 0], y[:, 0]) ** 2
    ref += np.abs(x - x.T).mean() + np.abs(y - y.T).mean() - dxx - dyy
    assert ours == pytest.approx(ref, rel=1e-9)


def test_scorer_real_vs_shifted(bench):
    """Real against real scores near the floor; a shifted, scaled copy scores far off."""
    rng = np.random.default_rng(2)
    d, n = 8, 1000
    mix = rng.standard_normal((d, d))  # heavy-tailed, correlated: a miniature of the patches
    train, test, ica, real = (rng.laplace(size=(n, d)) @ mix for _ in range(4))
    kw = dict(max_points=n, energy_points=500, nn_points=500, c2st_hidden=(64,), c2st_epochs=30)
    scorer = bench.Scorer(train, test, ica, **kw)
    good = scorer(real)
    bad = scorer(1.5 * real + 2.0)
    assert good["ica_ks"] < 0.08 and good["radius_ks"] < 0.08 and good["c2st"] < 0.6
    assert good["var_ratio"] < 1.3 and good["out_of_range"] < 0.01
    assert 0.8 < good["memorisation"] < 1.25 and good["energy"] < 0.02
    assert bad["radius_ks"] > 0.2 and bad["c2st"] > 0.75 and bad["var_ratio"] > 1.6
    assert bad["energy"] > 10 * good["energy"] and bad["out_of_range"] > 0.02
    # the radius KS is scipy's KS of the Mahalanobis radii
    w = np.linalg.inv(np.linalg.cholesky(np.cov(train, rowvar=False, bias=True)))
    radius = lambda x: np.linalg.norm((x - train.mean(0)) @ w.T, axis=1)  # noqa: E731
    ref = stats.ks_2samp(radius(real.astype(np.float32)), radius(test.astype(np.float32)))
    assert good["radius_ks"] == pytest.approx(ref.statistic, abs=2e-3)
    # copying the training codes is memorisation
    assert scorer(train)["memorisation"] < 0.05


def test_the_methods_maps_and_their_gaps(bench):
    """Each method's sample function carries its map; the linear map is optimal (gap 0), RBIG's
    stack of random rotations is not, and the symmetric whitening colours back exactly."""
    import jax

    rng = np.random.default_rng(4)
    d, n = 6, 2000
    codes = (rng.laplace(size=(n, d)) @ rng.standard_normal((d, d))).astype(np.float32)
    key = jax.random.key(0)
    linear, rbig = bench.fit_linear(key, codes), bench.fit_rbig(key, codes, layers=4)
    z = np.asarray(jax.random.normal(key, (5, d)))
    np.testing.assert_allclose(linear.transport(z), linear(key, 5), rtol=1e-5, atol=1e-5)
    assert bench.map_gaps(linear.transport, d, 256)["cm_gap"] == 0.0
    gaps = bench.map_gaps(rbig.transport, d, 256)
    assert gaps["cm_gap"] > 0.1 and gaps["reassigned"] > 0.3
    assert gaps["monge_rel"] >= gaps["cm_gap"] * (1 - 1e-3)
    mean, w, w_inv = bench._whitening(codes, symmetric=True)
    np.testing.assert_allclose(w, w.T, atol=1e-10)
    np.testing.assert_allclose(w @ w_inv, np.eye(d), atol=1e-8)
    white = (codes - mean) @ w
    np.testing.assert_allclose(np.cov(white, rowvar=False, bias=True), np.eye(d), atol=1e-5)
