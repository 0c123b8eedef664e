"""Tests for latentot.aeot.solve_batch, the AE-OT batch LP, against scipy's exact solvers.

LP duals are not unique, so the potentials are never compared with one particular solution:
the tests check feasibility and the dual objective against the exact optimum (which equals the
optimal assignment cost for uniform weights), recomputing everything in float64 with NumPy.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment, linprog

from latentot.aeot import BatchLP, BatchLPSolver, solve_batch

# Every new shape or static setting costs a compilation (~2 s here), so the small tests share one.
SMALL = (32, 3)
_jitted_solve = jax.jit(solve_batch)


def _cost64(x, y) -> np.ndarray:
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    return 0.5 * np.sum((x[:, None, :] - y[None, :, :]) ** 2, axis=-1)


def _problem(kind: str, m: int, d: int, seed: int, dtype=np.float32):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((m, d))
    if kind == "shifted":  # codes from a different Gaussian
        y = 0.7 * rng.standard_normal((m, d)) + 0.5
    elif kind == "clusters":  # eight-Gaussians-like codes: a discontinuous OT map
        angles = 2 * np.pi * rng.integers(0, 8, size=m) / 8
        centres = np.zeros((m, d))
        centres[:, 0], centres[:, 1 % d] = 10 * np.cos(angles), 10 * np.sin(angles)
        y = centres + rng.standard_normal((m, d))
    elif kind == "far":  # both far from the origin: float32 cancellation in ‖x‖² + ‖y‖² - 2x·y
        x, y = x + 500.0, rng.standard_normal((m, d)) + 500.0
    else:
        raise AssertionError(kind)
    return x.astype(dtype), y.astype(dtype)


def _check_quality(lp: BatchLP, x, y, *, rtol_cost: float = 1e-5) -> None:
    """Optimality and feasibility of ``lp`` against the exact LP optimum, in float64."""
    c = _cost64(x, y)
    m = c.shape[0]
    rows, cols = linear_sum_assignment(c)
    optimum = c[rows, cols].mean()
    gain = np.trace(c) / m - optimum  # independent pairing i <-> i minus the optimum
    mean_cost = c.mean()

    phi = np.asarray(lp.phi, np.float64)
    psi = np.asarray(lp.psi, np.float64)
    violation = max(np.max(psi[None, :] - phi[:, None] - c), 0.0)
    assert violation <= 1e-3 * mean_cost
    # psi - violation is exactly feasible with phi: a certified lower bound on the optimum.
    dual = psi.mean() - phi.mean() - violation
    assert dual <= optimum + 1e-6 * mean_cost  # weak duality (catches a wrong reference)
    floor = 1e-6 * mean_cost  # float32 rounding, for problems whose optimum or gain is 0
    assert optimum - dual <= 1e-3 * optimum + floor
    assert optimum - dual <= 5e-3 * gain + floor
    assert abs(phi.mean()) <= 1e-5 * mean_cost

    sigma = np.asarray(lp.assignment)
    assert jnp.issubdtype(lp.assignment.dtype, jnp.integer)
    np.testing.assert_array_equal(np.sort(sigma), np.arange(m))
    assignment_cost = c[np.arange(m), sigma].mean()
    assert assignment_cost <= optimum + rtol_cost * mean_cost

    # The diagnostics describe the returned arrays.
    np.testing.assert_allclose(float(lp.cost), assignment_cost, rtol=1e-5, atol=1e-6 * mean_cost)
    np.testing.assert_allclose(
        float(lp.dual), psi.mean() - phi.mean(), rtol=1e-5, atol=1e-6 * mean_cost
    )
    np.testing.assert_allclose(
        float(lp.dual_gap), float(lp.cost) - float(lp.dual), atol=1e-6 * mean_cost
    )
    assert float(lp.dual_gap) >= -1e-5 * mean_cost
    assert 0.0 <= float(lp.max_violation) <= 1e-5 * mean_cost
    np.testing.assert_allclose(float(lp.mean_cost), mean_cost, rtol=1e-4)
    assert bool(lp.converged)
    assert 0 < int(lp.iterations)
    assert float(lp.marginal_error) >= 0.0


@pytest.mark.parametrize(
    ("kind", "m", "d"),
    [
        ("shifted", 256, 2),
        ("shifted", 256, 10),
        ("shifted", 256, 100),
        ("clusters", 256, 2),
        ("clusters", 256, 10),
        ("far", 256, 10),
    ],
)
def test_matches_exact_lp(kind, m, d):
    x, y = _problem(kind, m, d, seed=m + d)
    lp = solve_batch(x, y)
    assert lp.phi.shape == lp.psi.shape == lp.assignment.shape == (m,)
    assert lp.phi.dtype == lp.psi.dtype == jnp.float32
    _check_quality(lp, x, y)


def test_anderson():
    x, y = _problem("shifted", *SMALL, seed=3)
    _check_quality(solve_batch(x, y, acceleration_method="anderson", max_iterations=5000), x, y)


def test_dual_matches_highs_lp():
    """The dual objective is the optimum of Eq. 14 itself, solved as an LP by HiGHS."""
    m, _ = SMALL
    x, y = _problem("shifted", *SMALL, seed=7)
    c = _cost64(x, y)
    # Variables (H_i for the noise, then H_j for the codes): maximise mean(H_j) - mean(H_i)
    # subject to H_j - H_i <= c_ij.
    a_ub = np.zeros((m * m, 2 * m))
    for i in range(m):
        for j in range(m):
            a_ub[i * m + j, i] = -1.0
            a_ub[i * m + j, m + j] = 1.0
    objective = np.concatenate([np.full(m, 1.0 / m), np.full(m, -1.0 / m)])
    res = linprog(objective, A_ub=a_ub, b_ub=c.ravel(), bounds=(None, None), method="highs")
    assert res.status == 0
    lp_optimum = -res.fun
    lp = solve_batch(x, y)
    np.testing.assert_allclose(float(lp.cost), lp_optimum, rtol=1e-5)
    assert lp_optimum - float(lp.dual) <= 1e-3 * lp_optimum


def test_identical_sets_give_identity():
    x, _ = _problem("shifted", *SMALL, seed=0)
    lp = solve_batch(x, x)
    np.testing.assert_array_equal(np.asarray(lp.assignment), np.arange(SMALL[0]))
    assert abs(float(lp.cost)) <= 1e-5 * float(lp.mean_cost)
    _check_quality(lp, x, x)


def test_single_point():
    x = jnp.array([[0.0, 1.0]])
    y = jnp.array([[2.0, 1.0]])
    lp = solve_batch(x, y)
    assert int(lp.assignment[0]) == 0
    np.testing.assert_allclose(float(lp.cost), 2.0, rtol=1e-6)
    np.testing.assert_allclose(float(lp.phi[0]), 0.0, atol=1e-6)
    np.testing.assert_allclose(float(lp.psi[0]), 2.0, rtol=1e-6)
    assert bool(lp.converged)


def test_integer_inputs_become_float():
    x = (np.arange(SMALL[0] * SMALL[1]) % 7).reshape(SMALL)
    lp = solve_batch(x, x[::-1])
    assert lp.phi.dtype == jnp.float32
    assert jnp.issubdtype(lp.phi.dtype, jnp.floating)
    _check_quality(lp, x.astype(np.float32), x[::-1].astype(np.float32))


def test_jit_matches_eager():
    x, y = _problem("shifted", *SMALL, seed=1)
    eager = solve_batch(x, y)
    jitted = _jitted_solve(x, y)
    np.testing.assert_array_equal(np.asarray(jitted.assignment), np.asarray(eager.assignment))
    scale = float(eager.mean_cost)
    np.testing.assert_allclose(np.asarray(jitted.phi), np.asarray(eager.phi), atol=1e-5 * scale)
    np.testing.assert_allclose(np.asarray(jitted.psi), np.asarray(eager.psi), atol=1e-5 * scale)
    np.testing.assert_allclose(float(jitted.cost), float(eager.cost), rtol=1e-6)


def test_vmap_matches_per_batch_solves():
    problems = [_problem("shifted", *SMALL, seed=s) for s in range(3)]
    # Different scales per batch element, so the batched Sinkhorn loops stop at different times.
    xs = np.stack([p[0] for p in problems])
    ys = np.stack([p[1] * (1.0 + k) for k, p in enumerate(problems)]).astype(np.float32)
    batched = jax.jit(jax.vmap(solve_batch))(xs, ys)
    assert batched.phi.shape == (3, SMALL[0])
    assert batched.assignment.shape == (3, SMALL[0])
    assert batched.converged.shape == (3,)
    for k in range(3):
        single = solve_batch(xs[k], ys[k])
        scale = float(single.mean_cost)
        np.testing.assert_array_equal(
            np.asarray(batched.assignment[k]), np.asarray(single.assignment)
        )
        np.testing.assert_allclose(
            np.asarray(batched.phi[k]), np.asarray(single.phi), atol=1e-4 * scale
        )
        np.testing.assert_allclose(
            np.asarray(batched.psi[k]), np.asarray(single.psi), atol=1e-4 * scale
        )
        np.testing.assert_allclose(float(batched.cost[k]), float(single.cost), rtol=1e-6)
        assert int(batched.iterations[k]) == int(single.iterations)
        _check_quality(jax.tree.map(lambda a, k=k: a[k], batched), xs[k], ys[k])


def test_float64(x64):
    x, y = _problem("shifted", 64, 10, seed=5, dtype=np.float64)
    lp = solve_batch(x, y, epsilon=1e-4)
    assert lp.phi.dtype == lp.psi.dtype == lp.cost.dtype == jnp.float64
    _check_quality(lp, x, y, rtol_cost=1e-12)
    assert float(lp.max_violation) <= 1e-12 * float(lp.mean_cost)


def test_mixed_dtypes_promote(x64):
    x, y = _problem("shifted", 64, 10, seed=6, dtype=np.float64)
    lp = solve_batch(x.astype(np.float32), y)
    assert lp.phi.dtype == jnp.float64


@pytest.mark.parametrize(
    ("x_shape", "y_shape", "match"),
    [
        ((8,), (8, 2), "x must have rank 2"),
        ((8, 2), (1, 8, 2), "y must have rank 2"),
        ((8, 2), (7, 2), "same shape"),
        ((8, 2), (8, 3), "same shape"),
        ((0, 2), (0, 2), "m >= 1"),
    ],
)
def test_bad_shapes_raise_under_jit(x_shape, y_shape, match):
    x, y = jnp.zeros(x_shape), jnp.ones(y_shape)
    with pytest.raises(ValueError, match=match):
        solve_batch(x, y)
    with pytest.raises(ValueError, match=match):
        jax.jit(solve_batch)(x, y)


@pytest.mark.parametrize("name", ["x", "y"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_data_raises(name, bad):
    x, y = _problem("shifted", 8, 2, seed=0)
    args = {"x": x.copy(), "y": y.copy()}
    args[name][3, 1] = bad
    with pytest.raises(ValueError, match=f"{name} must be finite"):
        solve_batch(**args)


def test_non_finite_traced_data_is_flagged():
    x, y = _problem("shifted", *SMALL, seed=0)
    x[2, 0] = np.nan
    lp = _jitted_solve(x, y)
    assert not bool(lp.converged)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"epsilon": -1e-3}, "epsilon"),
        ({"epsilon": 0.0}, "epsilon"),
        ({"epsilon_init": 0.5}, "epsilon_init"),
        ({"epsilon_decay": 1.5}, "epsilon_decay"),
        ({"momentum": 2.0}, "momentum"),
        ({"threshold": 0.0}, "threshold"),
        ({"max_iterations": 0}, "max_iterations"),
        ({"inner_iterations": 0}, "inner_iterations"),
        ({"acceleration_method": "nesterov"}, "acceleration_method"),
    ],
)
def test_bad_hyperparameters_raise_under_jit(kwargs, match):
    x, y = _problem("shifted", 8, 2, seed=0)
    with pytest.raises(ValueError, match=match):
        jax.jit(functools.partial(solve_batch, **kwargs))(x, y)


def test_hyperparameters_are_keyword_only():
    x, y = _problem("shifted", 8, 2, seed=0)
    with pytest.raises(TypeError):
        solve_batch(x, y, 1e-3)  # type: ignore[misc]


def test_not_converged_is_reported():
    """Also covers acceleration_method="none" (one compilation for both)."""
    x, y = _problem("shifted", 64, 5, seed=2)
    lp = solve_batch(
        x,
        y,
        acceleration_method="none",
        max_iterations=2,
        inner_iterations=1,
        epsilon_init=1.0,
        threshold=1e-6,
    )
    assert not bool(lp.converged)
    # Even then the assignment is exact and the potentials feasible.
    c = _cost64(x, y)
    rows, cols = linear_sum_assignment(c)
    sigma = np.asarray(lp.assignment)
    np.testing.assert_allclose(c[np.arange(64), sigma].mean(), c[rows, cols].mean(), rtol=1e-5)
    assert float(lp.max_violation) <= 1e-5 * float(lp.mean_cost)


def test_diverged_sinkhorn_still_gives_exact_assignment():
    """Momentum near 2 makes Sinkhorn diverge; the outputs stay exact and feasible."""
    x, y = _problem("clusters", 64, 5, seed=4)
    lp = solve_batch(x, y, momentum=1.99)
    c = _cost64(x, y)
    rows, cols = linear_sum_assignment(c)
    sigma = np.asarray(lp.assignment)
    np.testing.assert_array_equal(np.sort(sigma), np.arange(64))
    np.testing.assert_allclose(c[np.arange(64), sigma].mean(), c[rows, cols].mean(), rtol=1e-5)
    phi, psi = np.asarray(lp.phi, np.float64), np.asarray(lp.psi, np.float64)
    assert np.all(np.isfinite(phi)) and np.all(np.isfinite(psi))
    assert np.max(psi[None, :] - phi[:, None] - c) <= 1e-5 * c.mean()
    assert psi.mean() - phi.mean() <= c[rows, cols].mean() + 1e-5 * c.mean()


def test_for_assignment_settings():
    """Only ε and the iteration cap change, and only towards less Sinkhorn work."""
    from latentot.aeot.lp import ASSIGNMENT_EPSILON, ASSIGNMENT_MAX_ITERATIONS

    loose = BatchLPSolver(momentum=1.2).for_assignment()
    assert loose == BatchLPSolver(
        momentum=1.2, epsilon=ASSIGNMENT_EPSILON, max_iterations=ASSIGNMENT_MAX_ITERATIONS
    )
    looser = BatchLPSolver(epsilon=0.1, max_iterations=50)
    assert looser.for_assignment() == looser


def test_for_assignment_is_exact_between_clusters():
    """Between two samples of the same separated clusters (pushed noise against codes) the
    assignment of the looser solve is still optimal (scipy), within the iteration cap, and
    its duals are feasible."""
    from latentot.aeot.lp import ASSIGNMENT_MAX_ITERATIONS

    m, d = 256, 8
    rng = np.random.default_rng(5)
    centres = 6.0 * rng.standard_normal((6, d))
    x, y = (
        (centres[rng.integers(0, 6, m)] + rng.standard_normal((m, d))).astype(np.float32)
        for _ in range(2)
    )
    lp = jax.jit(BatchLPSolver().for_assignment())(x, y)
    c = _cost64(x, y)
    rows, cols = linear_sum_assignment(c)
    sigma = np.asarray(lp.assignment)
    np.testing.assert_array_equal(np.sort(sigma), np.arange(m))
    assert c[np.arange(m), sigma].mean() <= c[rows, cols].mean() + 1e-6 * c.mean()
    assert 0 < int(lp.iterations) <= ASSIGNMENT_MAX_ITERATIONS
    phi, psi = np.asarray(lp.phi, np.float64), np.asarray(lp.psi, np.float64)
    assert np.max(psi[None, :] - phi[:, None] - c) <= 1e-5 * c.mean()


def test_exact_assignment_matches_scipy():
    """Optimal permutations on random, tied and conflicting costs; a permutation whatever the
    costs hold."""
    from latentot.aeot.lp import exact_assignment

    assign = jax.jit(exact_assignment)
    rng = np.random.default_rng(11)
    cases = [rng.standard_normal((40, 40)) for _ in range(3)]
    cases += [rng.integers(0, 3, (40, 40)).astype(float) for _ in range(3)]  # many ties
    same_column = rng.random((40, 40)) + 1.0
    same_column[:, 7] = 0.0  # every row's minimum in one column: the start matches one row
    cases += [same_column, np.ones((40, 40)), rng.standard_normal((5, 5)), np.ones((1, 1))]
    for c in cases:
        sigma = np.asarray(assign(jnp.asarray(c, jnp.float32)))
        m = len(c)
        np.testing.assert_array_equal(np.sort(sigma), np.arange(m))
        rows, cols = linear_sum_assignment(c)
        assert c[np.arange(m), sigma].sum() <= c[rows, cols].sum() + 1e-4
    bad = rng.standard_normal((40, 40))
    bad[3, 4], bad[5] = np.nan, np.inf
    sigma = np.asarray(assign(jnp.asarray(bad, jnp.float32)))
    np.testing.assert_array_equal(np.sort(sigma), np.arange(40))
