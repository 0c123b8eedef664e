"""Dtypes and shapes of real pipelines: half precision and image-shaped latents.

* The dtype grid: every prior × every operator (raw, matched, Cauchy, splines, subspaces, grids)
  × {bfloat16, float16, float32, float64 under x64}. Half-precision results keep their dtype,
  are finite, and are the float32 result of the same (upcast) inputs rounded once; float32
  results are finite; float64 inputs trace to float64 results (values: test_transforms etc.).
* ``axis=``: the reducing operations over ``(1, 2, 3)`` of ``[B, C, H, W]`` equal the
  flattened computation; component-wise operations work on any shape.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import latentot as lo
from latentot import chi, diagnostics, transport

KEY = jax.random.PRNGKey(0)
PRIORS = [lo.Gaussian(), lo.Uniform(), lo.Cauchy(), lo.Laplace(), lo.Logistic()]
HALF = [jnp.bfloat16, jnp.float16]
# Compilation is the cost of these tests (eager JAX compiles every primitive once per shape).
SHAPE = (2, 12)  # tiny: the grid is about dtypes, not statistics
IMAGE = (2, 3, 2, 2)  # [B, C, H, W] latents that flatten to SHAPE: the flattened computations
# of the axis= tests are then those test_dtype_grid compiled.
# The numerical maps are built by one jitted program per weight
# shape, so the operators below use three shapes only, [1, 2], [1, 3] and [1, 4] (a 2 × 2 grid
# is its four corners, a spline at one frame one weight vector, a subspace of one point one).
W4 = np.asarray([0.1, 0.2, 0.3, 0.4], np.float32)  # float32 weights: the latents' dtype wins


def _operators(prior):
    """name -> function of four latents z ``[4, 2, 12]`` (one dtype) returning one array."""
    rng = jax.random.PRNGKey(3)
    # A traced subspace's weights take the quadrature map by default: ask for the FFT lattice
    # (which matched_mean already built for [1, 4]), except where a closed form exists.
    method = "auto" if hasattr(prior, "stable_norm_order") else "fft"
    ops = {
        "lerp": lambda z: lo.lerp(z[0], z[1], 0.3),
        "slerp": lambda z: lo.slerp(z[0], z[1], 0.3),
        "combine": lambda z: lo.combine(z, W4),
        "grid": lambda z: lo.grid(z, 3),
        "analogy": lambda z: lo.analogy(z[0], z[1], z[2]),
        "spline": lambda z: lo.spline(z, np.asarray([1.5])),
        "vicinity": lambda z: lo.vicinity(rng, prior, z[0], 0.1, 2),
        "random_walk": lambda z: lo.random_walk(rng, prior, z[0], 0.1, 2),
        "matched_lerp": lambda z: lo.matched_lerp(prior, z[0], z[1], 0.3),
        "matched_combine": lambda z: lo.matched_combine(prior, z, W4),
        "matched_grid": lambda z: lo.matched_grid(prior, z, 2),
        "matched_analogy": lambda z: lo.matched_analogy(prior, z[0], z[1], z[2]),
        "matched_mean": lambda z: lo.matched_mean(prior, z),
        "matched_spline": lambda z: lo.matched_spline(prior, z, np.asarray([1.5])),
        "matched_subspace": lambda z: lo.matched_subspace(rng, prior, z, 1, method=method),
        "matched_vicinity": lambda z: lo.matched_vicinity(rng, prior, z[0], 0.1, 2),
        "matched_random_walk": lambda z: lo.matched_random_walk(rng, prior, z[0], 0.1, 2),
        "cauchy_lerp": lambda z: lo.cauchy_lerp(prior, z[0], z[1], 0.3),
        "transport_map": lambda z: transport.transport_map(prior, W4.astype(z.dtype))(z[0]),
    }
    if isinstance(prior, lo.Gaussian):
        ops["spherical_cauchy_lerp"] = lambda z: lo.spherical_cauchy_lerp(prior, z[0], z[1], 0.3)
    return ops


def _methods(prior):
    """name -> (argument of x ``[2, 12]``, method): the prior's methods on valid arguments."""
    methods = {
        "log_prob": (lambda x: x, prior.log_prob),
        "cdf": (lambda x: x, prior.cdf),
        "sf": (lambda x: x, prior.sf),
        "icdf": (prior.cdf, prior.icdf),
        "isf": (prior.sf, prior.isf),
    }
    if isinstance(prior, lo.Gaussian):
        r = lambda x: jnp.abs(x) + 1  # noqa: E731
        u = lambda x: prior.norm_cdf(r(x), 5)  # noqa: E731
        methods["norm_cdf"] = (r, lambda v: prior.norm_cdf(v, 5))
        methods["norm_sf"] = (r, lambda v: prior.norm_sf(v, 5))
        methods["norm_icdf"] = (u, lambda v: prior.norm_icdf(v, 5))
        methods["norm_isf"] = (u, lambda v: prior.norm_isf(v, 5))
        # The norm diagnostics and the chi law (scalars: half precision is fine for a statistic
        # computed in float32).
        methods["ks_distance"] = (lambda x: x, lambda v: diagnostics.ks_distance(v, prior))
        methods["norm_ks"] = (lambda x: x, lambda v: diagnostics.norm_ks(v, prior))
        methods["norm_stats"] = (lambda x: x, lambda v: jnp.stack(diagnostics.norm_stats(v)))
        methods["chi_icdf"] = (u, lambda v: chi.chi_icdf(v, 5))
    return methods


def _expected_half(ref, dtype):
    """The float32 result as the half dtype holds it: saturated at its largest finite value."""
    top = float(jnp.finfo(dtype).max)
    ref = np.asarray(ref, np.float32)
    return np.where(np.isfinite(ref), np.clip(ref, -top, top), ref)


def _check_half(name, out, ref, dtype):
    assert out.dtype == dtype, (name, out.dtype)
    assert out.shape == ref.shape, (name, out.shape, ref.shape)
    assert bool(jnp.all(jnp.isfinite(out))), name
    eps = float(jnp.finfo(dtype).eps)  # one rounding is at most eps / 2 relative
    np.testing.assert_allclose(
        np.asarray(out, np.float32),
        _expected_half(ref, dtype),
        rtol=eps,
        atol=eps * 1e-3,
        err_msg=f"{name} in {jnp.dtype(dtype).name}",
    )


def _representable(x32):
    """x32 rounded to values that bfloat16 and float16 both hold exactly: one float32 reference
    then serves both (every call of an operator costs its eager dispatches)."""
    x = x32.astype(jnp.bfloat16).astype(jnp.float32)
    assert bool(jnp.all(x.astype(jnp.float16).astype(jnp.float32) == x))
    return x


def _check_grid(name, fn, x32):
    """fn in bfloat16 and float16 against its float32 result, and its float64 dtype."""
    x32 = _representable(x32)
    ref = fn(x32)
    assert ref.dtype == jnp.float32, (name, ref.dtype)
    assert bool(jnp.all(jnp.isfinite(ref))), name
    for dtype in HALF:
        _check_half(name, fn(x32.astype(dtype)), ref, dtype)
    # float64: traced only (jax.eval_shape compiles nothing); the float64 values of the
    # operators are tested against float32 and scipy in test_transforms, test_transport,
    # test_convolution and test_chi.
    with jax.enable_x64(True):
        out64 = jax.eval_shape(fn, jax.ShapeDtypeStruct(x32.shape, jnp.float64))
    assert out64.dtype == jnp.float64, (name, out64.dtype)
    assert out64.shape == ref.shape, (name, out64.shape)


# One test per prior over every operator and method and the four dtypes. The half-precision
# calls compute in float32 on the same shapes, so they reuse the float32 compilations.
@pytest.mark.parametrize("prior", PRIORS, ids=lambda p: type(p).__name__)
def test_dtype_grid(prior):
    z32 = prior.sample(KEY, (4, *SHAPE), jnp.float32)
    for name, op in _operators(prior).items():
        _check_grid(name, op, z32)
    for name, (arg, method) in _methods(prior).items():
        _check_grid(name, method, arg(z32[0]))
    for dtype in HALF:
        draws = prior.sample(KEY, (20_000,), dtype)
        assert draws.dtype == dtype
        assert bool(jnp.all(jnp.isfinite(draws)))  # float16 Cauchy draws saturate, not overflow


def test_half_precision_under_jit():
    prior = lo.Uniform()  # the closed-form pair map: a small program to compile
    z = prior.sample(KEY, (2, *SHAPE), jnp.bfloat16)
    out = jax.jit(lambda a, b: lo.matched_lerp(prior, a, b, 0.3))(z[0], z[1])
    ref = lo.matched_lerp(prior, *z.astype(jnp.float32), 0.3)  # compiled by test_dtype_grid
    _check_half("jit matched_lerp", out, ref, jnp.bfloat16)


def test_mixed_dtypes_promote_or_raise_value_error():
    p = lo.Uniform()
    a = p.sample(KEY, SHAPE, jnp.bfloat16)
    b = p.sample(KEY, SHAPE, jnp.float16)
    c = p.sample(KEY, SHAPE, jnp.float32)
    # The tests run under strict promotion: no implicit path, a ValueError naming the arguments.
    for other in (b, c):
        with pytest.raises(ValueError, match="z0, z1 have dtypes"):
            lo.matched_lerp(p, a, other, 0.5)
        with pytest.raises(ValueError, match="z0, z1 have dtypes"):
            jax.jit(lambda x, y: lo.slerp(x, y, 0.5))(a, other)
    # Under JAX's standard promotion bfloat16 with float16 or float32 is float32.
    with jax.numpy_dtype_promotion("standard"):
        for other in (b, c):
            out = lo.matched_lerp(p, a, other, 0.5)
            assert out.dtype == jnp.float32
            ref = lo.matched_lerp(p, a.astype(jnp.float32), other.astype(jnp.float32), 0.5)
            np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------------------------
# axis=


def _image_latents(prior, shape=IMAGE):
    k0, k1 = jax.random.split(KEY)
    return prior.sample(k0, shape, jnp.float32), prior.sample(k1, shape, jnp.float32)


def test_reducing_operations_over_image_axes_equal_the_flattened_computation():
    g = lo.Gaussian()
    z0, z1 = _image_latents(g)
    f0, f1 = z0.reshape(SHAPE), z1.reshape(SHAPE)
    image = {
        "slerp": lo.slerp(z0, z1, 0.3, axis=(1, 2, 3)),
        "spherical_cauchy_lerp": lo.spherical_cauchy_lerp(g, z0, z1, 0.3, axis=(1, 2, 3)),
        "norm_stats": jnp.stack(diagnostics.norm_stats(z0, axis=(1, 2, 3))),
        "norm_ks": diagnostics.norm_ks(z0, g, axis=(-3, -2, -1)),
    }
    flat = {
        "slerp": lo.slerp(f0, f1, 0.3).reshape(IMAGE),
        "spherical_cauchy_lerp": lo.spherical_cauchy_lerp(g, f0, f1, 0.3).reshape(IMAGE),
        "norm_stats": jnp.stack(diagnostics.norm_stats(f0)),
        "norm_ks": diagnostics.norm_ks(f0, g),
    }
    for name, out in image.items():
        assert out.shape == flat[name].shape, name
        np.testing.assert_allclose(out, flat[name], rtol=1e-5, atol=1e-5, err_msg=name)
    # Over the last axis only (the default), each image row is interpolated on its own.
    assert not np.allclose(lo.slerp(z0, z1, 0.3), image["slerp"], atol=1e-3)
    # A latent axis in front: [d, B] with axis=0 is the transpose of [B, d].
    np.testing.assert_allclose(
        lo.slerp(f0.T, f1.T, 0.3, axis=0), flat["slerp"].reshape(SHAPE).T, rtol=1e-5, atol=1e-5
    )


def test_axis_t_broadcasting():
    z0, z1 = _image_latents(lo.Gaussian(), IMAGE[1:])  # one pair of image latents [C, H, W]
    ts = jnp.linspace(0.0, 1.0, 3)
    frames = lo.slerp(z0, z1, ts, axis=(-3, -2, -1))  # a vector of frames: [T, C, H, W]
    assert frames.shape == (3, *IMAGE[1:])
    for t, frame in zip(ts, frames, strict=True):
        ref = lo.slerp(z0.ravel(), z1.ravel(), t).reshape(z0.shape)
        np.testing.assert_allclose(frame, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(frames[0], z0, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(frames[-1], z1, rtol=1e-5, atol=1e-5)
    for bad in [(1, 1), 3, (0, "x"), ()]:
        with pytest.raises(ValueError, match="axis"):
            lo.slerp(z0, z1, 0.5, axis=bad)
    with pytest.raises(ValueError, match="latent axes"):
        lo.slerp(z0, z1[:, :1], 0.5, axis=(0, 1, 2))


def test_component_wise_operators_work_on_any_shape():
    prior = lo.Laplace()  # numerical maps (built by test_dtype_grid for these weights)
    z0, z1 = _image_latents(prior)
    for fn in [
        lambda a, b: lo.matched_lerp(prior, a, b, 0.3),
        lambda a, b: lo.matched_combine(prior, jnp.stack([a, b, b, a]), W4),
    ]:
        ref = fn(z0.reshape(SHAPE), z1.reshape(SHAPE)).reshape(IMAGE)
        np.testing.assert_allclose(fn(z0, z1), ref, rtol=1e-6, atol=1e-6)
