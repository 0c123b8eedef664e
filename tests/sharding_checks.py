"""Checks on simulated devices, run in a subprocess by ``tests/test_sharding.py``.

Usage: ``python tests/sharding_checks.py {ops,fit} [num_devices]`` (default 8 CPU devices). The
device count must be set before JAX starts, which is why this is a script and not a test module
(pytest keeps one device for the rest of the suite). Every check raises ``AssertionError`` with
a message naming the operator or property that failed; ``OK <section>`` is printed at the end.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import time

SECTION = sys.argv[1] if len(sys.argv) > 1 else "ops"
NUM_DEVICES = int(sys.argv[2]) if len(sys.argv) > 2 else 8
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={NUM_DEVICES}"
)
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402
from jax.sharding import AxisType, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import latentot as lo  # noqa: E402
from latentot import aeot  # noqa: E402
from latentot.aeot import pursuit  # noqa: E402
from latentot.aeot import train as train_mod  # noqa: E402
from latentot.aeot.losses import regression_loss  # noqa: E402

jax.config.update("jax_numpy_dtype_promotion", "strict")
assert jax.device_count() == NUM_DEVICES, (jax.device_count(), NUM_DEVICES)
MESH = jax.make_mesh((NUM_DEVICES,), ("data",), axis_types=(AxisType.Auto,))
# A collective whose result has at most this many elements moves no batch (e.g. the scalar
# "any not converged" of a while loop over the shard).
_SMALL = 16
_COLLECTIVE = re.compile(
    r"=\s*(.+?)\s(all-gather|all-reduce|all-to-all|collective-permute|reduce-scatter|"
    r"collective-broadcast|ragged-all-to-all)(-start)?\("
)


def _log(msg):
    print(msg, flush=True)


def collectives(compiled_text: str) -> list[tuple[str, str]]:
    """(kind, result type) of every cross-device collective in compiled HLO text."""
    found = []
    for line in compiled_text.splitlines():
        m = _COLLECTIVE.search(line)
        if m:
            found.append((m.group(2), m.group(1)))
    return found


def _num_elements(types: str) -> int:
    sizes = []
    for dims in re.findall(r"\[([0-9,]*)\]", types):
        sizes.append(int(np.prod([int(x) for x in dims.split(",") if x] or [1])))
    return max(sizes, default=1)


def assert_no_batch_collectives(name, compiled_text):
    found = collectives(compiled_text)
    big = [c for c in found if c[0] != "all-reduce" or _num_elements(c[1]) > _SMALL]
    assert not big, f"{name}: collectives that move the batch across devices: {big}"


def shard(x, spec):
    return jax.device_put(x, NamedSharding(MESH, spec))


# --------------------------------------------------------------------------------------------
# Matched operators.


def check_ops():
    B, d = 8 * NUM_DEVICES, 4
    z = jax.random.normal(jax.random.key(0), (5, B, d))
    t_vec = jnp.linspace(0.0, 1.0, B)
    corners = jax.random.normal(jax.random.key(1), (4, 2 * NUM_DEVICES))
    gauss, laplace, unif = lo.Gaussian(), lo.Laplace(), lo.Uniform()
    row, col = P("data"), P(None, "data")
    # name: (function, inputs, input specs, expected output spec)
    cases = {
        "matched_lerp (Gaussian, closed form)": (
            lambda a, b: lo.matched_lerp(gauss, a, b, 0.3),
            (z[0], z[1]),
            (row, row),
            row,
        ),
        "matched_lerp (Uniform, closed form)": (
            lambda a, b: lo.matched_lerp(unif, a, b, 0.3),
            (jnp.tanh(z[0]), jnp.tanh(z[1])),
            (row, row),
            row,
        ),
        "matched_lerp (Laplace, tabulated)": (
            lambda a, b: lo.matched_lerp(laplace, a, b, 0.3),
            (z[0], z[1]),
            (row, row),
            row,
        ),
        "matched_lerp (Laplace, one t per point, sharded tables)": (
            lambda a, b, t: lo.matched_lerp(laplace, a, b, t),
            (z[0], z[1], t_vec),
            (row, row, row),
            row,
        ),
        "matched_combine": (
            lambda zs: lo.matched_combine(gauss, zs, jnp.asarray([0.2, 0.3, 0.5])),
            (z[:3],),
            (col,),
            row,
        ),
        "matched_grid (latent axis sharded)": (
            lambda c: lo.matched_grid(gauss, c, 5),
            (corners,),
            (col,),
            P(None, None, "data"),
        ),
        "matched_analogy": (
            lambda a, b, c: lo.matched_analogy(gauss, a, b, c),
            (z[0], z[1], z[2]),
            (row, row, row),
            row,
        ),
        "matched_vicinity": (
            lambda a: lo.matched_vicinity(jax.random.key(2), gauss, a, 0.5, 3),
            (z[0],),
            (row,),
            col,
        ),
        "matched_random_walk": (
            lambda a: lo.matched_random_walk(jax.random.key(3), gauss, a, 0.5, 3),
            (z[0],),
            (row,),
            col,
        ),
        "cauchy_lerp": (
            lambda a, b: lo.cauchy_lerp(gauss, a, b, 0.3),
            (z[0], z[1]),
            (row, row),
            row,
        ),
        "spherical_cauchy_lerp": (
            lambda a, b: lo.spherical_cauchy_lerp(gauss, a, b, 0.3),
            (z[0], z[1]),
            (row, row),
            row,
        ),
    }
    singles = {}
    for name, (f, args, specs, out_spec) in cases.items():
        t0 = time.perf_counter()
        single = singles[name] = jax.jit(f)(*args)  # one device: the inputs are not sharded
        assert len(single.sharding.device_set) == 1, name
        sharded_args = [shard(a, s) for a, s in zip(args, specs, strict=True)]
        compiled = jax.jit(f).lower(*sharded_args).compile()  # one compilation: run and inspect
        out = compiled(*sharded_args)
        want = NamedSharding(MESH, out_spec)
        assert out.sharding.is_equivalent_to(want, out.ndim), (
            f"{name}: output sharding {out.sharding.spec}, expected {out_spec}"
        )
        np.testing.assert_allclose(
            np.asarray(out), np.asarray(single), rtol=1e-5, atol=1e-6, err_msg=name
        )
        assert_no_batch_collectives(name, compiled.as_text())
        _log(f"  {name}: {out_spec}, {time.perf_counter() - t0:.1f} s")

    # jax.make_mesh's default axis types are Explicit: every operator works there too (the
    # tabulated maps' gathers and ndtri's selects run under auto_axes), with and without
    # jax.set_mesh, sharded like the Auto-mesh result and equal to one device.
    explicit = jax.make_mesh((NUM_DEVICES,), ("data",))
    assert explicit.axis_types == (AxisType.Explicit,), explicit.axis_types
    for name, (f, args, specs, out_spec) in cases.items():
        single = singles[name]
        sharded_args = [
            jax.device_put(a, NamedSharding(explicit, s)) for a, s in zip(args, specs, strict=True)
        ]
        # The tabulated (Laplace) maps in both contexts, the rest under jax.set_mesh (where
        # the Cauchy interpolations failed).
        contexts = ("no mesh context", "jax.set_mesh") if "Laplace" in name else ("jax.set_mesh",)
        for context in contexts:
            if context == "jax.set_mesh":
                with jax.set_mesh(explicit):
                    out = jax.jit(f)(*sharded_args)
            else:
                out = jax.jit(f)(*sharded_args)
            want = NamedSharding(explicit, out_spec)
            assert out.sharding.is_equivalent_to(want, out.ndim), (
                f"{name} (Explicit axes, {context}): sharding {out.sharding.spec}, "
                f"expected {out_spec}"
            )
            np.testing.assert_allclose(
                np.asarray(out), np.asarray(single), rtol=1e-5, atol=1e-6, err_msg=name
            )
        _log(f"  {name}: Explicit axes ok")


# --------------------------------------------------------------------------------------------
# Data-parallel AE-OT training.

SMALL = {"width": 16, "depth": 1, "heads": 2}


def _codes(n=32 * 8):
    return jax.random.normal(jax.random.key(1), (n, 2)) + jnp.asarray([3.0, -2.0])


def _leaves(sampler):
    return jax.tree_util.tree_leaves(sampler.params)


def _assert_same_params(a, b, what, tol=1e-6):
    for x, y in zip(_leaves(a), _leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=tol, atol=tol, err_msg=what)


def _assert_replicated(sampler, mesh, what):
    for leaf in _leaves(sampler):
        assert leaf.sharding.is_fully_replicated, f"{what}: params not replicated: {leaf.sharding}"
        assert len(leaf.sharding.device_set) == mesh.size, f"{what}: {leaf.sharding}"
        shards = [np.asarray(s.data) for s in leaf.addressable_shards]
        for s in shards[1:]:
            np.testing.assert_array_equal(s, shards[0], err_msg=f"{what}: replicas differ")


def check_fit_one_device():
    mesh1 = jax.make_mesh((1,), ("data",), axis_types=(AxisType.Auto,))
    kw = {"steps": 10, "batch_size": 16, "potential": SMALL, "log_every": 5}
    codes = _codes(64)
    plain = aeot.fit(jax.random.key(3), codes, **kw)
    meshed = aeot.fit(jax.random.key(3), codes, mesh=mesh1, **kw)
    _assert_same_params(plain, meshed, "fit(mesh=1 device) vs fit()")
    np.testing.assert_allclose(
        meshed.history["loss"], plain.history["loss"], rtol=1e-5, err_msg="history"
    )
    _log("  one-device mesh == no mesh")


def _manual_first_step(rng, codes, potential, batch_size, mesh_size):
    """Step 0 of the documented data-parallel step, by hand on one device: device i draws with
    fold_in(fold_in(k_train, 0), i) from its row shard; the gradient is that of the devices'
    mean loss. Returns (mean loss, global norm of the gradient)."""
    _, k_train = jax.random.split(rng)
    graphdef, params, rest = nnx.split(potential, nnx.Param, ...)
    prior = lo.Gaussian()
    spread = float(jnp.sqrt(jnp.mean(jnp.var(codes, axis=0))))
    scale = float(f"{spread:.6g}")
    local = codes.shape[0] // mesh_size
    batches = []
    for i in range(mesh_size):
        key = jax.random.fold_in(jax.random.fold_in(k_train, 0), i)
        k_noise, k_batch, _ = jax.random.split(key, 3)
        x = prior.sample(k_noise, (batch_size, codes.shape[1]), codes.dtype)
        rows = codes[i * local : (i + 1) * local]
        assert local <= 16 * batch_size  # fit's sampling without replacement
        y = rows[jax.random.choice(k_batch, local, (batch_size,), replace=False)]
        lp = aeot.solve_batch(x, y)
        batches.append((x, lp.phi - jnp.mean(lp.phi), y[lp.assignment] - x))

    def mean_loss(p):
        model = nnx.merge(graphdef, p, rest)
        losses = [
            regression_loss(model, x, phi, t, lam=1.0, penalty="vector_l1", scale=scale)[0]
            for x, phi, t in batches
        ]
        return sum(losses) / len(losses)

    loss, grads = jax.value_and_grad(mean_loss)(params)
    return float(loss), float(optax.tree.norm(grads))


def check_fit_many_devices():
    n = MESH.size
    codes = _codes(32 * n)
    sharded_codes = shard(codes, P("data"))
    kw = {"steps": 8, "batch_size": 16, "potential": SMALL, "log_every": 4}

    # Runs, keeps the parameters replicated, history finite.
    calls = []
    real_run = train_mod._run_chunk

    def record(*args, **kwargs):
        calls.append((args, kwargs))
        return real_run(*args, **kwargs)

    train_mod._run_chunk = record
    try:
        t0 = time.perf_counter()
        full = aeot.fit(jax.random.key(3), sharded_codes, mesh=MESH, **kw)
        _log(f"  {n}-device fit: {time.perf_counter() - t0:.1f} s")
    finally:
        train_mod._run_chunk = real_run
    _assert_replicated(full, MESH, f"fit(mesh={n} devices)")
    assert np.all(np.isfinite(full.history["loss"])), full.history["loss"]
    np.testing.assert_array_equal(full.history["step"], np.arange(8))
    assert full.sample(jax.random.key(0), 4).shape == (4, 2)

    # The codes stay sharded: the per-device program sees its [N / n, d] rows only, and no
    # collective moves codes or batches (only scalars and the gradient's all-reduce).
    args, kwargs = calls[0]
    assert args[4] is sharded_codes, "fit copied codes that were already sharded over the mesh"
    text = real_run.lower(*args, **kwargs).compile().as_text()
    local, whole = f"f32[{codes.shape[0] // n},2]", f"f32[{codes.shape[0]},2]"
    assert local in text, f"the per-device step does not see a {local} codes shard"
    assert whole not in text, f"the per-device step materialises all the codes ({whole})"
    found = collectives(text)
    assert not [c for c in found if c[0] != "all-reduce"], f"gathers in the step: {found}"
    assert found, "no all-reduce in the step: the gradients are not averaged over devices"
    n_params = sum(x.size for x in _leaves(full))
    big = [c for c in found if _num_elements(c[1]) > max(_SMALL, n_params)]
    assert not big, f"all-reduces larger than the parameters: {big}"

    # Host codes give the same result as pre-sharded ones.
    host = aeot.fit(jax.random.key(3), np.asarray(codes), mesh=MESH, **kw)
    _assert_same_params(full, host, "host codes vs sharded codes", tol=0)

    # Gradients are the devices' mean (not their sum): compare step 0 with a manual step.
    pot = aeot.Potential(2, **SMALL, rngs=0)
    one = aeot.fit(
        jax.random.key(4),
        codes,
        mesh=MESH,
        steps=1,
        batch_size=16,
        potential=pot,
        log_every=1,
        method="minibatch",
    )
    loss, gnorm = _manual_first_step(jax.random.key(4), codes, pot, 16, n)
    np.testing.assert_allclose(one.history["loss"][0], loss, rtol=1e-4, err_msg="mean loss")
    np.testing.assert_allclose(
        one.history["grad_norm"][0], gnorm, rtol=1e-4, err_msg="gradient is not the devices' mean"
    )
    _log("  step 0 == manual mean over devices")

    # Resume with a mesh: same result as the uninterrupted run.
    with tempfile.TemporaryDirectory() as tmp:
        copies = []
        real_write = train_mod._ckpt.write_file

        def keep(path, *a, **k):
            real_write(path, *a, **k)
            copies.append(os.path.join(tmp, f"copy{len(copies)}.ckpt"))
            shutil.copy(path, copies[-1])

        train_mod._ckpt.write_file = keep
        try:
            path = os.path.join(tmp, "run.ckpt")
            aeot.fit(
                jax.random.key(3),
                sharded_codes,
                mesh=MESH,
                checkpoint_path=path,
                checkpoint_every=4,
                **kw,
            )
        finally:
            train_mod._ckpt.write_file = real_write
        assert len(copies) == 2, copies
        resumed = aeot.fit(jax.random.key(3), codes, mesh=MESH, resume_from=copies[0], **kw)
    _assert_same_params(full, resumed, "resume with a mesh")
    _assert_replicated(resumed, MESH, "resumed")
    np.testing.assert_allclose(resumed.history["loss"], full.history["loss"], rtol=1e-6)
    _log("  resume with a mesh == uninterrupted")

    # Validation: the codes must split evenly, and each shard must hold a batch.
    for bad, name in ((codes[:-1], "codes"), (codes[: 8 * n], "batch_size")):
        try:
            aeot.fit(jax.random.key(0), bad, mesh=MESH, **kw)
        except ValueError as e:
            assert name in str(e), e
        else:
            raise AssertionError(f"fit(mesh=...) accepted bad {name}")


def check_auto_method_on_any_mesh():
    """``method="auto"`` is the same method with and without a mesh (pursuit at d >= 33): the
    same frame (k, layers, basis) on one device and on the mesh, with Auto axes and with the
    Explicit axes that ``jax.make_mesh`` gives by default, and samples of the same law; and the
    debiased method runs on an Explicit mesh (its covariance contraction used to be refused)."""
    n = MESH.size
    explicit = jax.make_mesh((n,), ("data",))
    assert explicit.axis_types == (AxisType.Explicit,), explicit.axis_types
    rng = np.random.default_rng(2)  # 4 spiked directions carry 6 clusters, d = 40
    d, rows = 40, 4000 - 4000 % n
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    z = rng.standard_normal((rows, d))
    z[:, :4] = 2.0 * z[:, :4] + 4.0 * rng.standard_normal((6, 4))[rng.integers(6, size=rows)]
    # Bimodal directions of the bulk's variance: the complement's layers (FastICA sharded).
    z[:, 4:8] = np.sign(rng.standard_normal((rows, 4))) * 0.95 + 0.31 * rng.standard_normal(
        (rows, 4)
    )
    codes = (z @ q.T).astype(np.float32)
    kw = {"steps": 20, "batch_size": 32, "log_every": 10}
    assert aeot.resolve_method("auto", 40, mesh=MESH) == "pursuit"
    alone = aeot.fit(jax.random.key(2), codes, **kw)
    assert alone.k >= 2, alone.k  # a learned block: the mesh has something to train
    assert alone.frame.layers, "the control: the complement has layers"
    samples = np.asarray(alone.sample(jax.random.key(3), 4000))
    basis = np.asarray(alone.frame.basis[:, : alone.k])
    bimodal = q[:, 4:8]
    for mesh, what in ((MESH, "Auto axes"), (explicit, "Explicit axes")):
        t0 = time.perf_counter()
        on = aeot.fit(jax.random.key(2), codes, mesh=mesh, **kw)
        _log(f"  pursuit on {n} devices, {what}: {time.perf_counter() - t0:.1f} s")
        assert on.k == alone.k and len(on.frame.layers) == len(alone.frame.layers), what
        np.testing.assert_array_equal(np.asarray(on.frame.basis), np.asarray(alone.frame.basis))
        other = np.asarray(on.sample(jax.random.key(3), 4000))
        assert np.all(np.isfinite(other)), what
        # The learned block's marginals agree, and so do the layers' along the bimodal columns.
        for j, u in enumerate((*basis.T, *bimodal.T)):
            a, b = np.sort(samples @ u), np.sort(other @ u)
            grid = np.concatenate([a, b])
            ks = np.max(np.abs(np.searchsorted(a, grid) - np.searchsorted(b, grid))) / len(a)
            assert ks < 0.1, (what, j, ks)
        _log(f"  pursuit on {n} devices, {what}: same frame, block and layer marginals agree")
    small = {"steps": 4, "batch_size": 16, "potential": SMALL, "log_every": 4}
    deb = aeot.fit(jax.random.key(3), _codes(32 * n), mesh=explicit, method="debiased", **small)
    assert np.all(np.isfinite(deb.history["loss"]))
    _log("  debiased on an Explicit mesh ok")
    # The rows of a global array gathered on the devices (the search across processes): each
    # device's block from every device's rows, in the given order, sharded by rows.
    sharded = jax.device_put(codes, NamedSharding(MESH, P("data")))
    pick = np.sort(rng.choice(rows, 64 * n, replace=False))
    got = pursuit._gather_projected(sharded, pick, None, None, MESH, codes.dtype)
    assert got.sharding.is_equivalent_to(NamedSharding(MESH, P("data")), 2), got.sharding
    np.testing.assert_array_equal(np.asarray(got), codes[pick])
    mean, white = codes.mean(0), q[:, :5]
    got = pursuit._gather_projected(sharded, pick[::-1], mean, white, MESH)
    want = (codes[pick[::-1]].astype(np.float64) - mean) @ white
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)
    _log("  rows gathered on the devices ok")


if __name__ == "__main__":
    start = time.perf_counter()
    if SECTION == "ops":
        check_ops()
    elif SECTION == "fit":
        check_fit_one_device()
        check_fit_many_devices()
        check_auto_method_on_any_mesh()
    else:
        raise SystemExit(f"unknown section {SECTION!r}; use 'ops' or 'fit'")
    print(f"OK {SECTION} ({NUM_DEVICES} devices, {time.perf_counter() - start:.0f} s)")
