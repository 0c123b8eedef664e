"""Sampler.inverse_transport: round trips on training codes and on the sampler's own samples,
known preimages, the non-convergence report, shapes, jit and vmap."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from latentot import Gaussian, aeot
from latentot.aeot import inverse, train
from latentot.aeot.inverse import InverseInfo, InverseNotConvergedError
from tests import fitted

pytestmark = pytest.mark.heavy  # two AE-OT fits (compilation-bound: tens of seconds)


def _std(y):
    return float(jnp.sqrt(jnp.mean(jnp.var(y, axis=0))))


def _contract(sampler, y, scale):
    """The fraction of rows whose round trip ‖T(T⁻¹(y)) − y‖ / √d is within 1% of ``scale``."""
    x, info = sampler.inverse_transport(y, return_info=True)
    err = np.asarray(jnp.sqrt(jnp.mean((sampler.transport(x) - y) ** 2, axis=-1))) / scale
    assert np.all(np.isfinite(np.asarray(x)))
    # The info is the truth: a row is flagged exactly when its round trip is off.
    np.testing.assert_allclose(np.asarray(info.residual) / scale, err, rtol=1e-3, atol=1e-6)
    assert np.array_equal(np.asarray(info.converged), np.asarray(info.residual) <= info.tolerance)
    return float(np.mean(err <= 1e-2)), x, info


def test_round_trip_contract_and_the_known_preimage():
    # The contract: T(T⁻¹(y)) within 1e-2 of the codes' std for 95% of training codes and of the
    # sampler's own samples (256 of each here, one compilation; all 2000 codes in the slow
    # test below). The training codes' true preimages are known (the pair's optimal map): the
    # inverse must find them better than the inverse of the codes' Gaussian (Bures) map does.
    sampler, x, y, _ = fitted.clusters()
    x, codes = x[:256], y[:256]
    within, z, _ = _contract(sampler, codes, _std(y))
    assert within >= 0.95, within
    a, b = aeot.bures_map(y, Gaussian())
    linear = jnp.linalg.solve(a.T, (codes - b).T).T  # the inverse of x ↦ x a + b
    err = np.median(np.linalg.norm(np.asarray(z - x), axis=-1))
    control = np.median(np.linalg.norm(np.asarray(linear - x), axis=-1))
    assert err < 0.75 * control, (err, control)
    within, _, _ = _contract(sampler, sampler.sample(jax.random.key(5), 256), _std(y))
    assert within >= 0.95, within


@pytest.mark.slow  # a minute on 2 cores (Newton on all 2000 training codes): run with -m slow
def test_all_training_codes_round_trip_and_the_rest_is_flagged():
    sampler, _, y, _ = fitted.clusters()
    within, _, info = _contract(sampler, y, _std(y))
    assert within >= 0.95, within
    if not np.all(np.asarray(info.converged)):
        with pytest.raises(InverseNotConvergedError, match="did not converge"):
            info.check()


def test_unconverged_codes_are_flagged_and_check_raises():
    flagged = InverseInfo(jnp.asarray([0.0, 1.0]), jnp.asarray([True, False]), jnp.asarray(0.1))
    with pytest.raises(InverseNotConvergedError, match="1 of 2 codes"):
        flagged.check()
    InverseInfo(jnp.asarray([0.0]), jnp.asarray([True]), jnp.asarray(0.1)).check()


@pytest.mark.slow  # minutes of fitting and Newton on 2 cores: run with -m slow
def test_frame_sampler_inverts_the_complement_exactly_and_the_block_by_newton():
    sampler, _, y, _ = fitted.subspace()
    assert sampler.frame is not None and sampler.k >= 2
    own = sampler.sample(jax.random.key(5), 1000)
    within, _, _ = _contract(sampler, own, _std(y))
    assert within >= 0.95, within
    z = sampler.inverse_transport(y[:1000])
    q = sampler.frame.basis  # the complement is exact up to float32 rounding
    comp = np.asarray(sampler.transport(z) - y[:1000]) @ np.asarray(q[:, sampler.k :])
    assert np.max(np.abs(comp)) < 1e-3 * _std(y)


def test_boxed_sampler_inverts_through_the_box():
    # fit(bounds=...) squashes the map into a box by a sigmoid: the inverse takes the logits
    # first. Codes outside the box have no preimage: finite and flagged.
    sampler, _, y, _ = fitted.clusters()
    low, high = jnp.min(y, axis=0) - 1.0, jnp.max(y, axis=0) + 1.0
    boxed = train._with(sampler, bounds=(low, high))
    own = boxed.sample(jax.random.key(6), 254)
    rows = jnp.concatenate([own, jnp.stack([high + 1.0, low - 1.0])])  # one compilation
    x, info = boxed.inverse_transport(rows, return_info=True)
    err = np.asarray(jnp.sqrt(jnp.mean((boxed.transport(x[:-2]) - own) ** 2, axis=-1)))
    assert np.mean(err <= 1e-2 * _std(own)) >= 0.95, np.quantile(err / _std(own), [0.5, 0.95])
    assert np.all(np.isfinite(np.asarray(x))) and not np.any(np.asarray(info.converged[-2:]))


def test_boxed_sampler_tolerance_is_in_the_units_of_its_residual():
    # The residual of a boxed sampler is measured in the box, so its tolerance must be the
    # codes' spread in the box too (here the box is narrow: 0.05 wide, the codes' spread in it
    # far below the spread of the logits). A code a tenth of that spread outside the box has no
    # preimage: ten times the tolerance away, it must be flagged.
    sampler, _, y, _ = fitted.clusters()
    low, high = jnp.full((4,), -0.025), jnp.full((4,), 0.025)
    boxed = train._with(sampler, bounds=(low, high))
    own = boxed.sample(jax.random.key(7), 4000)
    spread = _std(own)
    assert spread < 0.1 * _std(y)
    rows = jnp.concatenate([own[:6], (high + 0.1 * spread)[None]])
    x, info = boxed.inverse_transport(rows, return_info=True)
    np.testing.assert_allclose(float(info.tolerance), 1e-2 * spread, rtol=0.05)
    err = np.sqrt(np.mean(np.asarray(boxed.transport(x) - rows) ** 2, axis=-1))
    np.testing.assert_allclose(np.asarray(info.residual), err, rtol=1e-3, atol=1e-9)
    assert err[-1] > 5.0 * float(info.tolerance) and not bool(info.converged[-1])
    assert np.all(np.asarray(info.converged[:-1])) and np.all(err[:-1] <= 1e-2 * spread)


def test_the_anchor_table_is_built_once_per_sampler_state():
    from latentot.aeot import sampler as sampler_module

    sampler = fitted.clusters()[0]
    f32 = jnp.dtype(jnp.float32)
    first = sampler_module._cached_table(sampler, f32)
    assert sampler_module._cached_table(sampler, f32) is first
    params = jax.tree_util.tree_map(lambda v: v * 1.5, sampler.params)  # new arrays
    changed = aeot.Sampler(
        params, sampler.prior, sampler.potential_config, frame=sampler.frame, dim=sampler.dim
    )
    table = sampler_module._cached_table(changed, f32)
    assert table is not first
    np.testing.assert_array_equal(np.asarray(table[0]), np.asarray(first[0]))  # same anchors
    images = sampler_module.transport(changed.model, table[0])  # the new map's images
    np.testing.assert_allclose(np.asarray(table[1]), np.asarray(images), rtol=1e-5, atol=1e-5)
    assert not np.allclose(np.asarray(table[1]), np.asarray(first[1]), atol=1e-3)


def test_a_sampler_of_the_same_structure_reuses_the_compiled_inverse():
    # The inverse's programs take the sampler's state as arguments, so a second sampler of the
    # same structure (other parameter values) runs the programs compiled for the first; so do
    # the anchor table's. (256 rows: the batch size of the first test, compiled there already.)
    sampler, _, y, _ = fitted.clusters()
    other = aeot.Sampler(
        jax.tree_util.tree_map(lambda v: 1.001 * v, sampler.params),
        sampler.prior,
        sampler.potential_config,
        graphdef=sampler.graphdef,
        dim=sampler._dim,
        frame=sampler.frame,
    )
    rows = y[:256]
    _, info = sampler.inverse_transport(rows, return_info=True)
    compiled = []

    def listener(event, seconds, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiled.append(str(kwargs.get("fun_name")))

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        x, other_info = other.inverse_transport(rows, return_info=True)
        reused = list(compiled)
        jax.jit(lambda v: v + 1.0)(rows)  # a new program: the listener sees it
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert len(compiled) > len(reused), compiled
    assert np.all(np.asarray(info.converged)) and np.all(np.asarray(other_info.converged))
    assert not any("_inverse_jit" in name or "_anchor_table" in name for name in reused), reused
    np.testing.assert_allclose(np.asarray(other.transport(x)), np.asarray(rows), atol=1e-2)


def test_shapes_jit_vmap_and_errors():
    sampler, _, y, _ = fitted.clusters()
    one = sampler.inverse_transport(y[0])
    assert one.shape == (4,)
    batch = sampler.inverse_transport(y[:6].reshape(2, 3, 4))
    np.testing.assert_allclose(np.asarray(batch.reshape(6, 4)[0]), np.asarray(one), atol=1e-5)
    jitted = jax.jit(lambda s, c: s.inverse_transport(c, return_info=True))(sampler, y[:6])
    np.testing.assert_allclose(np.asarray(jitted[0]), np.asarray(batch.reshape(6, 4)), atol=1e-5)
    assert jitted[1].converged.shape == (6,)
    vm = jax.vmap(sampler.inverse_transport)(y[:6])
    np.testing.assert_allclose(np.asarray(vm), np.asarray(jitted[0]), atol=1e-5)
    with pytest.raises(ValueError, match=r"\[\.\.\., 4\]"):
        sampler.inverse_transport(y[:, :3])
    with pytest.raises(ValueError, match="rank"):
        sampler.inverse_transport(jnp.float32(1.0))
    far = sampler.inverse_transport(jnp.full((2, 3, 4), 1e4, jnp.float32))  # compiled above
    assert np.all(np.isfinite(np.asarray(far)))


@pytest.mark.parametrize("dense_max", [256, 0], ids=["dense", "gmres"])
def test_newton_recovers_a_known_convex_map_dense_and_matrix_free(monkeypatch, dense_max):
    # φ(x) = ½ xᵀAx + Σ log cosh(x): ∇φ is a known, strictly monotone map with a unique preimage.
    # With DENSE_JACOBIAN_MAX_DIM = 0 every step goes through GMRES on Jacobian-vector products
    # (the path of learned blocks above 256 dims), which must find the same preimages.
    monkeypatch.setattr(inverse, "DENSE_JACOBIAN_MAX_DIM", dense_max)
    k = 6
    b = jax.random.normal(jax.random.key(0), (k, k))
    a = b @ b.T / k + 0.5 * jnp.eye(k)

    def phi(v):
        return 0.5 * v @ a @ v + jnp.sum(jnp.log(jnp.cosh(3.0 * v))) / 3.0

    z = 2.0 * jax.random.normal(jax.random.key(1), (64, k))
    y = jax.vmap(jax.grad(phi))(z)
    x = jax.jit(lambda y: inverse.newton_inverse(phi, y, y, 30))(y)
    np.testing.assert_allclose(np.asarray(x), np.asarray(z), atol=1e-4)


def _known_convex_map(k=6, n=64):
    b = jax.random.normal(jax.random.key(0), (k, k))
    a = b @ b.T / k + 0.5 * jnp.eye(k)

    def phi(v):
        return 0.5 * v @ a @ v + jnp.sum(jnp.log(jnp.cosh(3.0 * v))) / 3.0

    z = 2.0 * jax.random.normal(jax.random.key(1), (n, k))
    return phi, a, z, jax.vmap(jax.grad(phi))(z)


@pytest.mark.parametrize("first_jacobian", ["base", "identity", "hessian"])
def test_passes_recover_a_known_convex_map(first_jacobian):
    # The same known map: the quasi-Newton passes alone (passes="fast") must find every preimage
    # from starts at the origin and at y, whether the first inverse Jacobian is the quadratic's
    # (a good guess), the identity (a poor one: the retry pass from the Hessian finishes), or
    # the Hessian at the start.
    phi, a, z, y = _known_convex_map()
    guess = {"base": jnp.linalg.inv(a), "identity": jnp.eye(6), "hessian": None}[first_jacobian]
    starts = jnp.stack([jnp.zeros_like(y), y])

    def solve(y, starts):
        return inverse.solve_inverse(
            phi, y, starts, tolerance=1e-6, iterations=30, jacobian_inverse=guess, passes="fast"
        )

    x = jax.jit(solve)(y, starts)
    np.testing.assert_allclose(np.asarray(x), np.asarray(z), atol=1e-4)


def test_quasi_newton_steps_and_the_robust_pass():
    # broyden_solve from the exact inverse Jacobian at the start converges in a few steps; with
    # a wrong first Jacobian (its negative) and no retry budget it does not, and the robust pass
    # of solve_inverse (many-start damped Newton) then finds every preimage.
    phi, a, z, y = _known_convex_map(n=16)
    x0 = z + 0.05 * jax.random.normal(jax.random.key(2), z.shape)
    binv = inverse.hessian_inverse(phi, x0)
    h = jax.vmap(jax.hessian(phi))(x0)
    np.testing.assert_allclose(
        np.asarray(jnp.einsum("nij,njk->nik", binv, h)),
        np.broadcast_to(np.eye(6), h.shape),
        atol=1e-3,
    )
    x, r2 = inverse.broyden_solve(phi, y, x0, binv, 8, 1e-12)
    np.testing.assert_allclose(np.asarray(x), np.asarray(z), atol=1e-4)
    np.testing.assert_allclose(
        np.asarray(r2), np.sum(np.asarray(jax.vmap(jax.grad(phi))(x) - y) ** 2, -1), atol=1e-8
    )
    starts = jnp.stack([jnp.zeros_like(y), 3.0 * y])
    x = inverse.solve_inverse(
        phi, y, starts, tolerance=1e-6, iterations=30, jacobian_inverse=-jnp.linalg.inv(a)
    )
    np.testing.assert_allclose(np.asarray(x), np.asarray(z), atol=1e-4)
