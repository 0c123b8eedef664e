"""Matched operations through a LatentMap: every code is inverted once, in one call."""

import jax.numpy as jnp
import numpy as np

import latentot as lt


class _Affine:
    """``T(z) = 2 z + 1`` on Gaussian noise; counts the rows given to its inverse per call."""

    prior = lt.Gaussian()

    def __init__(self):
        self.calls = []

    def transport(self, z):
        return 2.0 * z + 1.0

    def inverse_transport(self, codes):
        self.calls.append(codes.shape)
        return (codes - 1.0) / 2.0


def test_every_latent_is_inverted_once_in_one_call():
    latent_map = _Affine()
    assert isinstance(latent_map, lt.LatentMap)
    rng = np.random.default_rng(0)
    a, b = (jnp.asarray(rng.normal(size=(64, 5)), jnp.float32) for _ in range(2))
    t = np.linspace(0.0, 1.0, 9)[:, None]
    paths = lt.matched_lerp(latent_map, a, b, t)
    assert latent_map.calls == [(128, 5)]  # both endpoints of the 64 paths, once, not per frame
    # The Gaussian closed form on the noise, mapped back: T(((1-t) za + t zb) / √((1-t)² + t²)).
    za, zb = (np.asarray(a) - 1.0) / 2.0, (np.asarray(b) - 1.0) / 2.0
    tt = t[..., None]
    want = 2.0 * ((1 - tt) * za + tt * zb) / np.sqrt((1 - tt) ** 2 + tt**2) + 1.0
    np.testing.assert_allclose(np.asarray(paths), want, rtol=1e-5, atol=1e-5)
    # Analogies take three latents of other leading shapes: still one call, split back in order.
    latent_map.calls.clear()
    out = lt.matched_analogy(latent_map, a[0], b[:3], a[3:6])
    assert latent_map.calls == [(7, 5)]
    zc = (np.asarray(a[3:6]) - 1.0) / 2.0
    want = 2.0 * (zc + zb[:3] - za[0]) / np.sqrt(3.0) + 1.0
    np.testing.assert_allclose(np.asarray(out), want, rtol=1e-5, atol=1e-5)
