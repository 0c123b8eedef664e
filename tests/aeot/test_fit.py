"""Training: sign conventions, the loss, validation, divergence, history, callbacks, resume."""

import dataclasses
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from latentot import Gaussian, Uniform, aeot
from latentot.aeot import losses
from latentot.aeot import train as train_mod

SMALL = {"width": 32, "depth": 2, "heads": 2}


def _codes(n=256, d=2, shift=(3.0, -2.0), seed=1):
    z = jax.random.normal(jax.random.key(seed), (n, d))
    return z + jnp.asarray(shift[:d], jnp.float32)


def test_batch_potential_sign():
    """D must regress +phi: the c-concave extension of the LP's H has ∇H(x_i) = y_σ(i) − x_i."""
    x = jax.random.normal(jax.random.key(0), (12, 2))
    y = 3.0 * jax.random.normal(jax.random.key(1), (12, 2)) + jnp.array([4.0, 0.0])
    lp = aeot.solve_batch(x, y)
    psi = lp.psi - jnp.mean(lp.phi)

    def h(z):  # H(z) = max_j (H_j − ½‖z − y_j‖²), the extension tight at the matched pairs
        return jnp.max(psi - 0.5 * jnp.sum((z - y) ** 2, -1))

    hx = jax.vmap(h)(x)
    np.testing.assert_allclose(hx - hx.mean(), lp.phi - lp.phi.mean(), atol=2e-2)
    grads = jax.vmap(jax.grad(h))(x)
    np.testing.assert_allclose(grads, y[lp.assignment] - x, atol=1e-4)
    # ... and T(x) = x + ∇H(x) lands on the codes, whereas x − ∇H(x) does not.
    np.testing.assert_allclose(x + grads, y[lp.assignment], atol=1e-4)
    assert not np.allclose(x - grads, y[lp.assignment], atol=1e-1)


def test_value_regression_alone_moves_noise_towards_codes():
    """λ = 0: only the value term. The learned map must shift N(0, I) onto N(μ, I)."""
    mu = jnp.array([3.0, -2.0])
    sampler = aeot.fit(
        jax.random.key(0),
        _codes(512),
        steps=150,
        batch_size=128,
        learning_rate=1e-2,
        lam=0.0,
        method="minibatch",
        potential={"width": 32, "depth": 2, "heads": 1, "activation": "softplus", "base": False},
    )
    mean = sampler.sample(jax.random.key(1), 2000).mean(0)
    assert float(jnp.linalg.norm(mean - mu)) < 0.5, mean


def test_norm_penalty_is_nan_safe_at_zero_gradient():
    pot = aeot.Potential(2, width=4, depth=1, heads=1, skip=False)
    pot.out.kernel[...] = jnp.zeros_like(pot.out.kernel[...])  # D constant: ∇D = 0
    graphdef, params = nnx.split(pot, nnx.Param)
    x = jnp.ones((3, 2))
    phi = jnp.zeros(3)
    target = jnp.ones((3, 2))

    def loss(p, norm_penalty):
        return losses.regression_loss(
            nnx.merge(graphdef, p), x, phi, target, lam=1.0, penalty=norm_penalty
        )[0]

    grads = jax.grad(loss)(params, "norm")
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree_util.tree_leaves(grads))

    # The naive norm would give NaN here: this is what the test guards against.
    def naive(p):
        model = nnx.merge(graphdef, p)
        g = model.gradient(x)
        return jnp.mean((jnp.linalg.norm(g, axis=-1) - jnp.linalg.norm(target, axis=-1)) ** 2)

    naive_grads = jax.tree_util.tree_leaves(jax.grad(naive)(params))
    assert any(bool(jnp.any(jnp.isnan(g))) for g in naive_grads)


def test_penalties_values():
    pot = aeot.Potential(2, width=8, depth=1, heads=1, rngs=3)
    x = jax.random.normal(jax.random.key(0), (5, 2))
    target = jax.random.normal(jax.random.key(1), (5, 2))
    phi = jnp.arange(5.0) - 2.0
    g = pot.gradient(x)
    value = jnp.mean((pot(x) - phi) ** 2)
    vec = jnp.mean(jnp.sum((g - target) ** 2, -1))
    nrm = jnp.mean((jnp.linalg.norm(g, axis=-1) - jnp.linalg.norm(target, axis=-1)) ** 2)
    l1 = jnp.mean(jnp.linalg.norm(g - target, axis=-1))
    for penalty, pen in (("vector", vec), ("norm", nrm), ("vector_l1", l1)):
        loss, aux = losses.regression_loss(pot, x, phi, target, lam=0.5, penalty=penalty)
        np.testing.assert_allclose(aux["value_loss"], value, rtol=1e-5)
        np.testing.assert_allclose(aux["penalty_loss"], pen, rtol=2e-3)
        np.testing.assert_allclose(loss, value + 0.5 * pen, rtol=2e-3)


_RANDOM = np.random.default_rng(0).normal(size=(64, 2)).astype(np.float32)


@pytest.mark.parametrize(
    ("codes", "kwargs", "name"),
    [
        (np.full((64, 2), np.nan, np.float32), {}, "codes"),
        (np.array([[0.0, np.inf]] * 64, np.float32), {}, "codes"),
        (np.zeros((64,), np.float32), {}, "codes"),
        (np.zeros((4, 16, 2), np.float32), {}, "codes"),
        (np.zeros((16, 2), np.float32), {"batch_size": 32}, "batch_size"),
        (_RANDOM, {"prior": Gaussian(loc=jnp.zeros(3))}, "prior"),
        (_RANDOM, {"steps": 0}, "steps"),
        (_RANDOM, {"steps": -5}, "steps"),
        (_RANDOM, {"batch_size": 0}, "batch_size"),
        (_RANDOM, {"learning_rate": 0.0}, "learning_rate"),
        (_RANDOM, {"learning_rate": -1e-3}, "learning_rate"),
        (_RANDOM, {"penalty": "l1"}, "penalty"),
        (_RANDOM, {"lam": -1.0}, "lam"),
        (np.ones((64, 2), np.float32), {}, "all equal"),
        (_RANDOM, {"method": "sinkhorn"}, "method"),
        (_RANDOM, {"optimizer": "adam"}, "optimizer"),
        (_RANDOM, {"callback": 3}, "callback"),
        (_RANDOM, {"lp": 3}, "lp"),
        (_RANDOM, {"potential": 3}, "potential"),
        (_RANDOM, {"validation_codes": np.zeros((64, 3), np.float32)}, "validation_codes"),
        (_RANDOM, {"validation_codes": np.full((64, 2), np.nan, np.float32)}, "validation_codes"),
    ],
)
def test_bad_input(codes, kwargs, name, monkeypatch):
    def no_training(*args, **kw):
        raise AssertionError("training started")

    monkeypatch.setattr(train_mod, "_run_chunk", no_training)
    kwargs = {"batch_size": 16, "steps": 10} | kwargs
    with pytest.raises(ValueError, match=name):
        aeot.fit(jax.random.key(0), codes, **kwargs)


def test_divergence_names_step_and_keeps_last_good_parameters():
    with pytest.raises(aeot.TrainingDivergedError, match=r"step \d+") as info:
        aeot.fit(
            jax.random.key(0),
            _codes(64),
            steps=40,
            batch_size=32,
            learning_rate=1e36,
            potential=SMALL,
            log_every=10,
        )
    err = info.value
    assert isinstance(err, FloatingPointError)
    assert 0 <= err.step < 40
    leaves = jax.tree_util.tree_leaves(err.sampler.params)
    assert all(bool(jnp.all(jnp.isfinite(p))) for p in leaves)
    assert len(err.sampler.history["loss"]) == err.step
    assert np.all(np.isfinite(err.sampler.history["loss"]))


def test_history_callback_and_validation():
    steps, calls = 30, []
    held_out = _codes(128, seed=7)
    sampler = aeot.fit(
        jax.random.key(0),
        _codes(128),
        steps=steps,
        batch_size=32,
        potential=SMALL,
        method="debiased",
        log_every=7,
        validation_codes=held_out,
        callback=lambda step, metrics: calls.append((step, metrics)),
    )
    h = sampler.history
    for key in (
        "step",
        "loss",
        "penalty_loss",
        "map_error",
        "grad_norm",
        "lp_cost",
        "lp_self_cost",
        "lp_dual_gap",
        "lp_max_violation",
        "lp_converged",
    ):
        assert h[key].shape == (steps,), key
    np.testing.assert_array_equal(h["step"], np.arange(steps))
    assert np.all(np.isfinite(h["loss"]))
    # One callback per chunk, on the host, with floats; held-out metrics under "val…" keys.
    assert [c[0] for c in calls] == [7, 14, 21, 28, 30]
    for step, metrics in calls:
        assert isinstance(metrics["loss"], float)
        assert metrics["loss"] == h["loss"][step - 1]
        assert {"val_cost", "val_divergence"} <= metrics.keys()
    np.testing.assert_array_equal(h["val_step"], [7, 14, 21, 28, 30])
    assert h["val_cost"].shape == (5,) and np.all(h["val_cost"] > 0)
    assert sampler.sample(jax.random.key(1), 10).shape == (10, 2)


def test_optimizer_and_lp_arguments():
    """Any optax transformation; one argument carries the LP solver and its settings."""
    kw = {"steps": 6, "batch_size": 32, "potential": SMALL, "log_every": 3}
    sgd = aeot.fit(jax.random.key(0), _codes(64), optimizer=optax.sgd(1e-3), **kw)
    adam = aeot.fit(jax.random.key(0), _codes(64), **kw)
    assert not np.allclose(sgd.history["loss"][1:], adam.history["loss"][1:])
    solver = aeot.BatchLPSolver(epsilon=1e-2, acceleration_method="none")
    loose = aeot.fit(jax.random.key(0), _codes(64), lp=solver, **kw)
    assert np.all(np.isfinite(loose.history["lp_cost"]))
    assert hash(solver) == hash(aeot.BatchLPSolver(epsilon=1e-2, acceleration_method="none"))
    with pytest.raises(ValueError, match="epsilon"):
        aeot.BatchLPSolver(epsilon=-1.0)


class _Quadratic(nnx.Module):
    """A user potential: D(x) = ½ xᵀ M x + bᵀ x with M = Bᵀ B (not a latentot Potential)."""

    def __init__(self, dim, rngs):
        self.b_mat = nnx.Param(jnp.eye(dim) + 0.01 * jax.random.normal(rngs.params(), (dim, dim)))
        self.shift = nnx.Param(jnp.zeros((dim,)))

    def __call__(self, x):
        bx = x @ self.b_mat[...].T
        return 0.5 * jnp.sum(bx * bx, axis=-1) - 0.5 * jnp.sum(x * x, axis=-1) + x @ self.shift[...]


def test_user_module_is_trained_as_given():
    """A Gaussian target and an affine-map potential: the module learns the shift."""
    module = _Quadratic(2, nnx.Rngs(0))
    sampler = aeot.fit(
        jax.random.key(0),
        _codes(512),
        steps=150,
        batch_size=128,
        potential=module,
        optimizer=optax.adam(0.05),
    )
    assert isinstance(sampler.model, _Quadratic)
    assert sampler.potential_config is None
    np.testing.assert_array_equal(module.shift[...], np.zeros(2))  # the given module is intact
    np.testing.assert_allclose(sampler.model.shift[...], [3.0, -2.0], atol=0.3)
    out = jax.jit(lambda s, z: s.transport(z))(sampler, jnp.zeros((1, 2)))
    np.testing.assert_allclose(out[0], sampler.model.shift[...], atol=1e-5)
    assert sampler.sample(jax.random.key(1), 5).shape == (5, 2)
    with pytest.raises(ValueError, match="config"):
        aeot.save("unused.aeot", sampler)


def test_resume_matches_uninterrupted_run(tmp_path, monkeypatch):
    # ema_decay: the checkpoint must carry the parameter average too.
    kwargs = {"steps": 24, "batch_size": 32, "potential": SMALL, "log_every": 8, "ema_decay": 0.9}
    codes = _codes(96)
    full = aeot.fit(jax.random.key(3), codes, **kwargs)

    # Keep a copy of every checkpoint the second run writes, then resume from the middle one.
    written = []
    real_write = train_mod._ckpt.write_file

    def spy(path, *args, **kw):
        real_write(path, *args, **kw)
        copy = tmp_path / f"copy{len(written)}.ckpt"
        shutil.copy(path, copy)
        written.append(copy)

    monkeypatch.setattr(train_mod._ckpt, "write_file", spy)
    path = tmp_path / "run.ckpt"
    aeot.fit(jax.random.key(3), codes, checkpoint_path=path, checkpoint_every=8, **kwargs)
    monkeypatch.undo()
    assert len(written) == 3
    resumed = aeot.fit(jax.random.key(3), codes, resume_from=written[0], **kwargs)
    for a, b in zip(
        jax.tree_util.tree_leaves(full.params),
        jax.tree_util.tree_leaves(resumed.params),
        strict=True,
    ):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(resumed.history["loss"], full.history["loss"], rtol=1e-6)
    # The checkpoint of the finished run loads as a sampler with its history.
    loaded = aeot.load(path)
    np.testing.assert_array_equal(loaded.history["step"], np.arange(24))

    with pytest.raises(ValueError, match="optimizer"):
        aeot.fit(jax.random.key(3), codes, resume_from=written[0], learning_rate=0.5, **kwargs)
    with pytest.raises(ValueError, match="prior"):
        aeot.fit(jax.random.key(3), codes, resume_from=written[0], prior=Uniform(), **kwargs)
    with pytest.raises(ValueError, match="prior"):
        aeot.fit(
            jax.random.key(3), codes, resume_from=written[0], prior=Gaussian(scale=2.0), **kwargs
        )


@pytest.mark.heavy
def test_constant_column_and_scale_invariance():
    """Bad input: a constant column stays (nearly) constant, and training is
    scale-invariant: codes × 1e-6 and × 1e6 give the same pushed law × 1e-6 and × 1e6 (the
    trajectories are not bit-equal: rounding changes a few LP assignments)."""
    codes = np.array(_codes(128, d=3, shift=(3.0, -2.0, 0.0)))
    codes[:, 2] = 5.0
    kw = {"steps": 20, "batch_size": 64, "potential": SMALL, "log_every": 20}
    base = aeot.fit(jax.random.key(0), codes, **kw)
    z = jax.random.normal(jax.random.key(1), (256, 3))
    t = np.asarray(base.transport(z))
    assert np.all(np.isfinite(t))
    assert np.std(t[:, 2]) < 0.05 * np.std(t[:, :2])
    np.testing.assert_allclose(np.mean(t[:, 2]), 5.0, atol=0.1)
    for factor in (1e-6, 1e6):
        scaled = aeot.fit(jax.random.key(0), factor * codes, **kw)
        ts = np.asarray(scaled.transport(z)) / factor
        assert np.all(np.isfinite(ts)), factor
        np.testing.assert_allclose(ts.mean(0), t.mean(0), atol=0.05 * np.std(t[:, :2]))
        np.testing.assert_allclose(ts[:, :2].std(0), t[:, :2].std(0), rtol=0.1)


def test_trainer_core_in_a_user_loop():
    """The optax-style core: init, a jitted step in the user's own loop, then a sampler."""
    potential = aeot.Potential(2, width=16, depth=1, heads=2, rngs=0)
    trainer = aeot.Trainer(
        graphdef=nnx.graphdef(potential), optimizer=optax.adam(1e-2), batch_size=64
    )
    state = trainer.init(jax.random.key(0), potential, Gaussian())
    step = jax.jit(trainer.step)
    codes = _codes(128)
    for _ in range(3):
        state, metrics = step(state, codes)
    assert int(state.step) == 3
    assert bool(metrics["finite"]) and metrics["loss"].shape == ()
    sampler = trainer.sampler(state)
    assert sampler.sample(jax.random.key(1), 4).shape == (4, 2)
    with pytest.raises(ValueError, match="batch_size"):
        step(state, codes[:10])
    with pytest.raises(ValueError, match="method"):
        aeot.Trainer(graphdef=trainer.graphdef, optimizer=optax.sgd(1.0), method="exact")


def test_sampler_uses_the_bias_corrected_parameter_average():
    """With ``ema_decay = δ`` the sampler's parameters are Σ_i (1 − δ) δ^(k−i) p_i / (1 − δ^k)
    over the iterates p_1 … p_k (no weight on the initial parameters); ``0`` gives p_k."""
    potential = aeot.Potential(2, width=8, depth=1, heads=2, rngs=0)
    codes = _codes(128)
    delta, k = 0.7, 5
    trainer = aeot.Trainer(
        graphdef=nnx.graphdef(potential),
        optimizer=optax.adam(1e-1),
        batch_size=64,
        ema_decay=delta,
    )
    plain = dataclasses.replace(trainer, ema_decay=0.0)
    state = trainer.init(jax.random.key(0), potential, Gaussian())
    np.testing.assert_array_equal(  # before any step: the initial parameters
        _flat(trainer.averaged_params(state)), _flat(state.params)
    )
    step = jax.jit(trainer.step)
    iterates = []
    for _ in range(k):
        state, _ = step(state, codes)
        iterates.append(_flat(state.params))
    w = (1 - delta) * delta ** np.arange(k - 1, -1, -1)
    want = (w[:, None] * np.stack(iterates)).sum(0) / (1 - delta**k)
    np.testing.assert_allclose(_flat(trainer.averaged_params(state)), want, rtol=1e-5, atol=1e-6)
    assert np.abs(want - iterates[-1]).max() > 1e-3  # the average is not the last iterate
    # The sampler carries the average (this potential has no fixed variables).
    np.testing.assert_allclose(_flat(trainer.sampler(state).params), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(_flat(plain.averaged_params(state)), iterates[-1])
    for bad in (1.0, -0.1, "0.9"):
        with pytest.raises(ValueError, match="ema_decay"):
            dataclasses.replace(trainer, ema_decay=bad)
        with pytest.raises(ValueError, match="ema_decay"):
            aeot.fit(jax.random.key(0), codes, steps=2, ema_decay=bad)


def _flat(tree):
    return np.concatenate([np.ravel(a) for a in jax.tree_util.tree_leaves(tree)])


def test_auto_method_is_minibatch_in_the_plane_debiased_above_and_pursuit_from_33():
    """``method="auto"`` (the default) resolves by dimension, with each method's own batch size,
    penalty and potential defaults; the resolved method is what trains."""
    assert aeot.resolve_method("auto", 1) == aeot.resolve_method("auto", 2) == "minibatch"
    assert aeot.resolve_method("auto", 3) == aeot.resolve_method("auto", 32) == "debiased"
    assert aeot.resolve_method("auto", 33) == aeot.resolve_method("auto", 512) == "pursuit"
    assert aeot.resolve_method("minibatch", 64) == "minibatch"
    with pytest.raises(ValueError, match="method"):
        aeot.resolve_method("exact", 2)
    kw = {"steps": 4, "potential": SMALL, "log_every": 4}
    for d, method in ((2, "minibatch"), (3, "debiased")):
        codes = _codes(96, d=d, shift=(3.0, -2.0, 1.0))
        auto = aeot.fit(jax.random.key(0), codes, **kw)
        explicit = aeot.fit(jax.random.key(0), codes, method=method, **kw)
        for a, b in zip(
            jax.tree.leaves(auto.params), jax.tree.leaves(explicit.params), strict=True
        ):
            np.testing.assert_array_equal(a, b)
        # Only the debiased method solves the self-transport LP.
        assert ("lp_self_cost" in auto.history) == (method == "debiased")
    # (Each fit above ran with the method's default batch capped at its 96 codes.)
    defaults = train_mod.METHOD_DEFAULTS
    assert defaults["minibatch"]["batch_size"] == 1024 and defaults["debiased"]["batch_size"] == 512
    assert auto.model.base is True and auto.model.curvature is True  # (d = 3: debiased)
    # The debiased method's shared quadratic is on up to DEBIASED_QUADRATIC_MAX_DIM.
    assert auto.model.quadratic is True
    top = train_mod.DEBIASED_QUADRATIC_MAX_DIM
    assert train_mod.default_potential("debiased", top)["quadratic"] is True
    assert train_mod.default_potential("debiased", top + 1)["quadratic"] is False
    assert train_mod.default_potential("minibatch", 64)["quadratic"] is True
    planar = aeot.fit(jax.random.key(0), _codes(96, d=2), **kw)
    assert planar.model.quadratic is True and planar.model.base is False
