"""Tests for latentot.aeot.targets against assignments computed by scipy in float64."""

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import linear_sum_assignment

from latentot.aeot import BatchLPSolver
from latentot.aeot.targets import debiased_targets, minibatch_targets


def _clusters(rng, m, d, centres):
    """m points around the rows of ``centres`` (separated clusters, like pushed noise)."""
    return centres[rng.integers(0, len(centres), m)] + 0.5 * rng.standard_normal((m, d))


def _sq_cost(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return 0.5 * np.sum((a[:, None, :] - b[None, :, :]) ** 2, axis=-1)


def _lsa(cost):
    rows, cols = linear_sum_assignment(cost)
    out = np.empty(len(rows), int)
    out[rows] = cols
    return out


def test_debiased_targets_match_scipy_assignments():
    """All three permutations of the debiased target are the optimal ones (scipy's), also with
    the looser Sinkhorn settings that BatchLPSolver.for_assignment gives these solves."""
    m, d = 96, 4
    rng = np.random.default_rng(0)
    centres = 6.0 * rng.standard_normal((5, d))
    x = rng.standard_normal((m, d))
    # u = T(x) for the gradient map T = ∇φ, φ(x) = ½‖x‖² + ½ xᵀAx + max_k (c_k·x): monotone.
    a = 0.3 * np.eye(d)
    heads = 3.0 * rng.standard_normal((4, d))
    k = np.argmax(x @ heads.T, axis=1)
    u = x + x @ a + heads[k]
    phi_x = 0.5 * np.sum(x * x, 1) + 0.5 * np.sum((x @ a) * x, 1) + np.max(x @ heads.T, 1)
    u_self = _clusters(rng, m, d, centres)
    y = _clusters(rng, m, d, centres)

    sigma = _lsa(_sq_cost(u, y))
    tau = _lsa(_sq_cost(u, u_self))
    pi = _lsa(_sq_cost(x, u))
    expected = (u + y[sigma] - u_self[tau])[pi] - x

    f32 = [jnp.asarray(v, jnp.float32) for v in (x, u, u_self, y, phi_x)]
    for phi in (f32[4], None):
        none, target, stats = jax.jit(debiased_targets, static_argnums=0)(
            BatchLPSolver(), *f32[:4], phi
        )
        assert none is None
        np.testing.assert_allclose(np.asarray(target), expected, atol=1e-4)
        np.testing.assert_allclose(
            float(stats["lp_cost"]), _sq_cost(u, y)[np.arange(m), sigma].mean(), rtol=1e-5
        )
        np.testing.assert_allclose(float(stats["monotone_moved"]), np.mean(pi != np.arange(m)))


def test_minibatch_targets_keep_the_solver_settings():
    """The minibatch targets use the LP's duals, so they solve with the given settings."""
    m, d = 64, 3
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((m, d)), jnp.float32)
    y = jnp.asarray(_clusters(rng, m, d, 5.0 * rng.standard_normal((4, d))), jnp.float32)
    solver = BatchLPSolver()
    phi, target, _ = minibatch_targets(solver, x, y)
    lp = solver(x, y)
    np.testing.assert_array_equal(np.asarray(phi), np.asarray(lp.phi - jnp.mean(lp.phi)))
    sigma = _lsa(_sq_cost(x, y))
    np.testing.assert_allclose(np.asarray(target), np.asarray(y)[sigma] - np.asarray(x), atol=1e-6)
