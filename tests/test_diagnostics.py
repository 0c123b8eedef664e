"""Tests of latentot.diagnostics: the papers' numbers, KS against scipy, figure data and plots.

Monte Carlo tolerances are stated next to each test: 5 standard errors of the estimate (so a
correct implementation fails about once in 10⁶ runs; seeds are fixed anyway), plus the rounding of
the number the paper prints where the test compares against a printed value.
"""

import io
import json
import math
import re

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import pytest
import scipy.stats

import latentot as lt
from latentot import diagnostics as dg
from latentot import norms

matplotlib.use("Agg")

D = 100
N = 20_000


# --------------------------------------------------------------------------------------------
# Agustsson et al., Fig. 2: mean squared norm of midpoints in d = 100.


@pytest.mark.parametrize(
    ("prior", "printed"),
    [
        # Uniform(-1, 1): E Z² = 1/3, so prior and matched d/3 = 33.3, linear d/6 = 16.7.
        (lt.Uniform(), {"prior": 33.3, "linear": 16.7, "matched": 33.3}),
        # Gaussian: 100 / 50 / 100.
        (lt.Gaussian(), {"prior": 100.0, "linear": 50.0, "matched": 100.0}),
    ],
    ids=["uniform", "gaussian"],
)
def test_fig2_mean_squared_norms_match_the_paper(prior, printed):
    data = dg.fig2_data(jax.random.key(0), prior, dim=D, n=N)
    assert set(data) == {"prior", "linear", "slerp", "matched"}
    for name, value in printed.items():
        sq = np.asarray(data[name], np.float64)
        assert sq.shape == (N,)
        # 5 standard errors of the mean (sampling std: uniform ≈ 3.0, Gaussian ≈ 14.1 for the
        # prior, so ±0.1 and ±0.5), plus 0.05 for the paper's rounding to one decimal.
        tol = 5 * sq.std() / math.sqrt(N) + 0.05
        assert abs(sq.mean() - value) < tol, (name, sq.mean(), value, tol)
    # SLERP keeps the norm (approximately, in high dimension) but not the component law.
    slerp = float(np.mean(data["slerp"]))
    assert abs(slerp - printed["prior"]) < 0.02 * printed["prior"]


def test_fig2_linear_differs_from_prior():
    data = dg.fig2_data(jax.random.key(1), lt.Uniform(), dim=D, n=2000)
    assert float(jnp.mean(data["linear"])) < 0.6 * float(jnp.mean(data["prior"]))


# --------------------------------------------------------------------------------------------
# Leśniak et al., Observation 2.1.


@pytest.mark.parametrize("d", [10, 100, 1000])
def test_observation_2_1_closed_forms(d):
    mean, var = norms.norm_law(lt.Gaussian(), d)
    np.testing.assert_allclose(float(mean), math.sqrt(d), rtol=1e-5)
    np.testing.assert_allclose(float(var), 0.5, rtol=1e-4)  # not the 1 the paper prints
    mean, var = norms.norm_law(lt.Uniform(), d)
    np.testing.assert_allclose(float(mean), math.sqrt(d / 3), rtol=1e-5)
    np.testing.assert_allclose(float(var), 1 / 15, rtol=1e-4)


def test_chi_moments_against_scipy_and_the_limit():
    for d in (1, 10, 100, 1000):
        mean, var = dg.chi_moments(d)
        np.testing.assert_allclose(float(mean), scipy.stats.chi(d).mean(), rtol=1e-6)
        np.testing.assert_allclose(float(var), scipy.stats.chi(d).var(), rtol=1e-4)
    # The chi variance tends to 1/2 (Obs. 2.1 with the right constant), not 1.
    _, var = dg.chi_moments(100_000)
    assert abs(float(var) - 0.5) < 1e-4


def test_observation_2_1_monte_carlo_gaussian():
    z = lt.Gaussian().sample(jax.random.key(2), (N, D))
    stats = dg.norm_stats(z)
    chi_mean, chi_var = (float(v) for v in dg.chi_moments(D))
    # SE of the mean: √(0.5 / N) = 0.005; SE of the variance: 0.5·√(2/N) = 0.005.
    se = 0.005
    assert abs(float(stats.mean_norm) - chi_mean) < 5 * se
    assert abs(float(stats.mean_norm) - math.sqrt(D)) < 5 * se + 0.03  # √d - chi mean ≈ 0.025
    assert abs(float(stats.var_norm) - chi_var) < 5 * se
    assert abs(float(stats.var_norm) - 1.0) > 0.4  # the paper's printed variance is wrong
    # Squared norms: χ²_d has mean d and variance 2d (SE √(2d/N) = 0.1 and 2d·√(2/N) = 2).
    assert abs(float(stats.mean_sq_norm) - D) < 5 * 0.1
    assert abs(float(stats.var_sq_norm) - 2 * D) < 5 * 2.0
    # The norms follow the chi law: KS well below the 1% critical value 1.63/√N.
    assert float(dg.norm_ks(z, lt.Gaussian())) < 1.63 / math.sqrt(N)
    # Obs. 2.1's mean √d is 0.025 ≈ 0.035σ above the chi mean, which shifts the CDF by ≤ 0.014.
    assert float(dg.norm_ks(z, lt.Gaussian(), law="approx")) < 1.63 / math.sqrt(N) + 0.015


def test_observation_2_1_monte_carlo_uniform():
    z = lt.Uniform().sample(jax.random.key(3), (N, D))
    stats = dg.norm_stats(z)
    # Mean: SE √(1/15/N) = 0.0018, and E‖z‖ sits below √(d/3) by about
    # Var‖z‖² / (8 (d/3)^{3/2}) = 0.006 at d = 100 (delta method).
    assert abs(float(stats.mean_norm) - math.sqrt(D / 3)) < 5 * 0.0018 + 0.006
    # Variance: SE (1/15)·√(2/N) = 0.00067; O(1/d) corrections are about 1%.
    assert abs(float(stats.var_norm) - 1 / 15) < 5 * 0.00067 + 0.001
    assert float(dg.norm_ks(z, lt.Uniform())) < 1.63 / math.sqrt(N) + 0.005


def test_norm_stats_against_numpy():
    z = jax.random.normal(jax.random.key(4), (7, 3, 5))
    s = dg.norm_stats(z, loc=0.5)
    r = np.linalg.norm(np.asarray(z, np.float64) - 0.5, axis=-1).ravel()
    np.testing.assert_allclose(
        [float(v) for v in s],
        [r.mean(), r.var(ddof=1), (r**2).mean(), (r**2).var(ddof=1)],
        rtol=1e-4,
    )


# --------------------------------------------------------------------------------------------
# KS distance.


@pytest.mark.parametrize(
    ("prior", "ref"),
    [
        (lt.Laplace(0.5, 2.0), scipy.stats.laplace(0.5, 2.0)),
        (lt.Cauchy(), scipy.stats.cauchy()),
    ],
    ids=["laplace", "cauchy"],
)
def test_ks_distance_matches_scipy(prior, ref):
    x = prior.sample(jax.random.key(5), (400, 10))
    flat = np.asarray(x, np.float64).ravel()
    ours = float(dg.ks_distance(x, prior))
    assert ours == pytest.approx(scipy.stats.kstest(flat, ref.cdf).statistic, abs=2e-6)
    # A mismatched sample: the same draws, doubled.
    ours = float(dg.ks_distance(2 * x, prior))
    assert ours == pytest.approx(scipy.stats.kstest(2 * flat, ref.cdf).statistic, abs=2e-6)
    assert ours > 0.05


def test_ks_distance_under_jit_equals_eager():
    x = jax.random.normal(jax.random.key(6), (300, 4))
    eager = dg.ks_distance(x, lt.Gaussian())
    jitted = jax.jit(dg.ks_distance)(x, lt.Gaussian())
    assert float(eager) == pytest.approx(float(jitted), abs=1e-7)
    cdf = jax.scipy.special.ndtr
    traced = jax.jit(lambda s: dg.ks_distance_cdf(s, cdf))(x)
    assert float(traced) == pytest.approx(float(eager), abs=1e-7)


def test_ks_errors():
    with pytest.raises(ValueError, match="empty"):
        dg.ks_distance(jnp.zeros((0, 3)), lt.Gaussian())
    with pytest.raises(TypeError, match="not a latentot prior"):
        dg.ks_distance(jnp.zeros((2, 3)), object())
    with pytest.raises(ValueError, match="no exact norm law"):
        dg.norm_ks(jnp.ones((2, 3)), lt.Uniform(), law="exact")
    with pytest.raises(ValueError, match="law"):
        dg.norm_ks(jnp.ones((2, 3)), lt.Gaussian(), law="chi")


# --------------------------------------------------------------------------------------------
# Mismatch report.


def test_mismatch_report_uniform():
    rep = dg.mismatch_report(jax.random.key(7), lt.Uniform(), 100, 2000)
    assert list(rep.rows) == ["prior", "linear", "slerp", "matched"]
    for row in rep.rows.values():
        assert all(isinstance(v, float) for v in row.values())
    # 2·10⁵ components: KS of a matched sample ≈ 0.87/√n ≈ 0.002; linear midpoints are far off.
    assert rep.rows["matched"]["ks"] < 0.006
    assert rep.rows["prior"]["ks"] < 0.006
    assert rep.rows["linear"]["ks"] > 0.1
    assert rep.rows["linear"]["norm_ks"] > 0.9
    assert rep.norm_law == pytest.approx((math.sqrt(100 / 3), 1 / 15), rel=1e-4)
    json.dumps(rep.as_dict())
    text = rep.format()
    assert "Uniform prior, d = 100" in text and "matched" in text


def test_mismatch_report_cauchy_has_no_norm_law():
    rep = dg.mismatch_report(jax.random.key(8), lt.Cauchy(), 20, 1000)
    assert rep.norm_law == (math.inf, math.inf)
    assert math.isnan(rep.rows["linear"]["norm_ks"])
    # Cauchy lerp is already matched.
    assert rep.rows["linear"]["ks"] < 0.01


def test_mismatch_report_loc_scale_gaussian():
    prior = lt.Gaussian(1.0, 2.0)
    rep = dg.mismatch_report(jax.random.key(9), prior, 50, 2000)
    assert rep.rows["matched"]["ks"] < 0.01
    assert rep.rows["matched"]["norm_ks"] < 0.05  # norms about loc follow 2·chi_50
    assert rep.norm_law == pytest.approx((2 * math.sqrt(50), 2.0), rel=1e-4)


# --------------------------------------------------------------------------------------------
# Figure data.


@pytest.fixture(scope="module")
def fig1():
    return dg.fig1_data(jax.random.key(10), n=20_000)


@pytest.fixture(scope="module")
def norm_data():
    priors = {"normal": lt.Gaussian(), "cauchy": lt.Cauchy()}
    return dg.norm_distribution_data(jax.random.key(11), priors, [2, 50], n=500, num=64)


def test_fig1_data(fig1):
    data = fig1
    assert list(data) == ["prior", "linear", "slerp", "matched"]
    for v in data.values():
        assert v.shape == (20_000, 2)
    m = np.asarray(data["matched"])
    assert m.min() >= -1 and m.max() <= 1
    assert float(dg.ks_distance(data["matched"], lt.Uniform())) < 0.015
    # The linear pyramid and the SLERP ring are not uniform.
    assert float(dg.ks_distance(data["linear"], lt.Uniform())) > 0.05
    # SLERP leaves a hole: far fewer points near the origin than the uniform prior has.
    near = lambda a: float(np.mean(np.linalg.norm(np.asarray(a), axis=-1) < 0.1))  # noqa: E731
    assert near(data["slerp"]) < 0.3 * near(data["prior"])


def _uniform_lerp_map(y, t):
    """Agustsson's trapezoid closed form, written independently in NumPy."""
    a, b = max(t, 1 - t), min(t, 1 - t)
    if b == 0:
        return y
    f = np.where(
        y <= b - a,
        (y + 1) ** 2 / (8 * a * b),
        np.where(y <= a - b, (y + a) / (2 * a), 1 - (1 - y) ** 2 / (8 * a * b)),
    )
    return 2 * f - 1


def test_fig3_data_uniform_matches_closed_form():
    data = dg.fig3_data(lt.Uniform(), ts=(0.05, 0.25, 0.5), num=101)
    assert data["maps"].shape == (3, 101)
    y = np.asarray(data["y"], np.float64)
    np.testing.assert_allclose(y[[0, -1]], [-1, 1])
    for t, m in zip((0.05, 0.25, 0.5), np.asarray(data["maps"]), strict=True):
        np.testing.assert_allclose(m, _uniform_lerp_map(y, t), atol=2e-5)
        assert np.all(np.diff(m) >= 0)


def test_fig3_data_gaussian_and_errors():
    y = jnp.linspace(-3.0, 3.0, 7)
    data = dg.fig3_data(lt.Gaussian(), ts=(0.25,), y=y)
    np.testing.assert_allclose(data["maps"][0], y / math.sqrt(0.75**2 + 0.25**2), rtol=1e-5)
    with pytest.raises(ValueError, match="ts"):
        dg.fig3_data(lt.Gaussian(), ts=(0.5, 1.5))


def test_norm_distribution_data(norm_data):
    data = norm_data
    assert list(data) == ["normal", "cauchy"]
    for name, by_dim in data.items():
        assert list(by_dim) == [2, 50]
        for d, rec in by_dim.items():
            assert rec["norms"].shape == (500,)
            assert rec["r"].shape == (64,)
            assert rec["approx_pdf"].shape == (64,)
            if name == "normal":
                np.testing.assert_allclose(
                    rec["exact_pdf"], scipy.stats.chi(d).pdf(np.asarray(rec["r"])), rtol=1e-3
                )
                assert float(rec["approx_mean"]) == pytest.approx(math.sqrt(d), rel=1e-5)
            else:
                assert rec["exact_pdf"] is None
    assert math.isinf(float(data["cauchy"][50]["approx_var"]))


# --------------------------------------------------------------------------------------------
# Plots.


def test_plots_return_figures(fig1, norm_data):
    from matplotlib.figure import Figure

    fig2 = {
        "uniform": dg.fig2_data(jax.random.key(12), lt.Uniform(), dim=D, n=200),
        "gaussian": dg.fig2_data(jax.random.key(12), lt.Gaussian(), dim=D, n=200),
    }
    figs = [
        dg.plot_fig1(fig1, bins=20),
        dg.plot_fig2(fig2, bins=20),
        dg.plot_fig3(dg.fig3_data(lt.Uniform(), num=21)),
        dg.plot_norm_distribution(norm_data),
    ]
    expected_axes = [4, 2, 1, 4]
    for fig, n_axes in zip(figs, expected_axes, strict=True):
        assert isinstance(fig, Figure)
        assert len(fig.axes) == n_axes
        fig.savefig(io.BytesIO(), format="png")


@pytest.mark.parametrize(
    ("prior", "half_width"),
    [
        # Uniform(-1, 1): the support, padded by 5%.
        (lt.Uniform(), 1.05 * 0.99),
        # Gaussian: the 99th percentile of |z|, 2.576, padded.
        (lt.Gaussian(), 1.05 * scipy.stats.norm.ppf(0.995)),
        # Cauchy: 5 × the upper quartile of |z| (tan(3π/8) = 2.414), since its q99 is 63.7.
        (lt.Cauchy(), 1.05 * 5 * math.tan(3 * math.pi / 8)),
    ],
    ids=["uniform", "gaussian", "cauchy"],
)
def test_plot_fig1_axes_show_the_body_of_every_prior(prior, half_width):
    # 2-D SLERP midpoints of nearly opposite pairs reach |z| of hundreds: the window must not
    # follow them (it did, and every panel showed a single dot).
    data = dg.fig1_data(jax.random.key(13), n=20_000, prior=prior)
    fig = dg.plot_fig1(data, bins=20)
    for ax in fig.axes[:4]:
        for lo, hi in (ax.get_xlim(), ax.get_ylim()):
            assert hi - lo == pytest.approx(2 * half_width, rel=0.05)
            assert (lo + hi) / 2 == pytest.approx(0.0, abs=0.05 * half_width)
    titles = [ax.get_title() for ax in fig.axes[:4]]
    # Points beyond the window are counted in the title, never silently dropped.
    slerp = np.asarray(data["slerp"])
    (x0, x1), (y0, y1) = fig.axes[2].get_xlim(), fig.axes[2].get_ylim()
    inside = (x0 <= slerp[:, 0]) & (slerp[:, 0] <= x1) & (y0 <= slerp[:, 1]) & (slerp[:, 1] <= y1)
    share = 1 - np.mean(inside)
    stated = re.search(r"([0-9.]+)% of points beyond the axes", titles[2])
    assert share > 0.01 and float(stated.group(1)) == pytest.approx(100 * share, abs=0.11)
    if isinstance(prior, lt.Uniform):
        assert "beyond" not in titles[0] and "beyond" not in titles[3]


def test_plot_fig2_heavy_tails_labels_and_legend():
    data = {
        "cauchy": dg.fig2_data(jax.random.key(14), lt.Cauchy(), dim=8, n=2000),
        "uniform": dg.fig2_data(jax.random.key(14), lt.Uniform(), dim=8, n=2000),
    }
    fig = dg.plot_fig2(data, bins=20)
    cauchy_ax, uniform_ax = fig.axes
    # Every point of every method is on the axes: a Cauchy prior gets a logarithmic x axis.
    for ax, values in ((cauchy_ax, data["cauchy"]), (uniform_ax, data["uniform"])):
        everything = np.concatenate([np.asarray(v) for v in values.values()])
        lo, hi = ax.get_xlim()
        assert lo <= everything.min() * (1 + 1e-6) and hi >= everything.max() * (1 - 1e-6)
    assert cauchy_ax.get_xscale() == "log" and uniform_ax.get_xscale() == "linear"
    assert cauchy_ax.get_ylabel() == "density per decade"
    assert uniform_ax.get_ylabel() == "density" and uniform_ax.get_legend() is None
    # One figure legend, outside the axes, names every method.
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["prior", "linear", "SLERP", "matched"]
