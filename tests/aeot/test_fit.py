"""Training: sign conventions, the loss, validation, divergence, history and resume."""

import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from latentot import Gaussian, aeot
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
        potential={"width": 32, "depth": 2, "heads": 1, "activation": "softplus"},
    )
    mean = sampler.sample(jax.random.key(1), 2000).mean(0)
    assert float(jnp.linalg.norm(mean - mu)) < 0.5, mean


def test_norm_penalty_is_nan_safe_at_zero_gradient():
    pot = aeot.Potential(2, width=4, depth=1, heads=1, skip=False)
    pot.out.kernel[...] = jnp.zeros_like(pot.out.kernel[...])  # D constant: ∇D = 0
    from flax import nnx

    graphdef, params = nnx.split(pot, nnx.Param)
    x = jnp.ones((3, 2))
    phi = jnp.zeros(3)
    target = jnp.ones((3, 2))

    def loss(p, norm_penalty):
        return train_mod.regression_loss(
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
        loss, aux = train_mod.regression_loss(pot, x, phi, target, lam=0.5, penalty=penalty)
        np.testing.assert_allclose(aux["value_loss"], value, rtol=1e-5)
        np.testing.assert_allclose(aux["penalty_loss"], pen, rtol=2e-3)
        np.testing.assert_allclose(loss, value + 0.5 * pen, rtol=2e-3)


@pytest.mark.parametrize(
    ("codes", "kwargs", "name"),
    [
        (np.full((64, 2), np.nan, np.float32), {}, "codes"),
        (np.array([[0.0, np.inf]] * 64, np.float32), {}, "codes"),
        (np.zeros((64,), np.float32), {}, "codes"),
        (np.zeros((4, 16, 2), np.float32), {}, "codes"),
        (np.zeros((16, 2), np.float32), {"batch_size": 32}, "batch_size"),
        (np.zeros((64, 2), np.float32), {"prior": Gaussian(loc=jnp.zeros(3))}, "prior"),
        (np.zeros((64, 2), np.float32), {"steps": 0}, "steps"),
        (np.zeros((64, 2), np.float32), {"steps": -5}, "steps"),
        (np.zeros((64, 2), np.float32), {"batch_size": 0}, "batch_size"),
        (np.zeros((64, 2), np.float32), {"learning_rate": 0.0}, "learning_rate"),
        (np.zeros((64, 2), np.float32), {"learning_rate": -1e-3}, "learning_rate"),
        (np.zeros((64, 2), np.float32), {"penalty": "l1"}, "penalty"),
        (np.zeros((64, 2), np.float32), {"lam": -1.0}, "lam"),
    ],
)
def test_bad_input(codes, kwargs, name, monkeypatch):
    def no_training(*args, **kw):
        raise AssertionError("training started")

    monkeypatch.setattr(train_mod, "_make_chunk_runner", no_training)
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


def test_history_progress_and_sampler(capsys):
    steps = 30
    sampler = aeot.fit(
        jax.random.key(0),
        _codes(128),
        steps=steps,
        batch_size=64,
        potential=SMALL,
        log_every=7,
    )
    h = sampler.history
    for key in (
        "step",
        "loss",
        "value_loss",
        "penalty_loss",
        "map_error",
        "learning_rate",
        "lp_cost",
        "lp_dual_gap",
        "lp_max_violation",
        "lp_converged",
    ):
        assert h[key].shape == (steps,), key
    np.testing.assert_array_equal(h["step"], np.arange(steps))
    assert np.all(np.isfinite(h["loss"]))
    assert h["learning_rate"][0] > h["learning_rate"][-1]  # cosine decay
    # stdout is captured (not a TTY): no progress bar.
    out = capsys.readouterr()
    assert "AE-OT" not in out.out and "AE-OT" not in out.err
    assert sampler.sample(jax.random.key(1), 10).shape == (10, 2)


def test_resume_matches_uninterrupted_run(tmp_path, monkeypatch):
    kwargs = {"steps": 24, "batch_size": 32, "potential": SMALL, "log_every": 8}
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

    with pytest.raises(ValueError, match="learning_rate"):
        aeot.fit(jax.random.key(3), codes, resume_from=written[0], learning_rate=0.5, **kwargs)
