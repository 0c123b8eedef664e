"""The regression loss of the AE-OT potential: value term and gradient penalty (Eq. 18).

    L(D) = (1/m) Σ_i (D(x_i) − H_i)²  +  λ · (1/m) Σ_i P_i,

where the value term is dropped when there is no value target (the ``"debiased"`` method) and
the penalty ``P_i`` is

* ``"vector"``: ‖∇D(x_i) − t_i‖², which regresses ∇D to the *mean* of its targets;
* ``"norm"`` (the paper's Eq. 18): (‖∇D(x_i)‖ − ‖t_i‖)², with a norm whose gradient is 0, not
  NaN, at ∇D = 0;
* ``"vector_l1"``: ‖∇D(x_i) − t_i‖, smoothed at 0 by δ = 10⁻³ × the RMS target length; it
  regresses ∇D to the (geometric) *median* of its targets. Near a cell boundary the minibatch
  assignment sends x to either of two clusters from one batch to the next; the median picks one
  of them where the mean lies between the clusters.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["PENALTIES", "regression_loss"]

PENALTIES = ("vector", "norm", "vector_l1")


def _safe_norm(v: jax.Array) -> jax.Array:
    """‖v‖ over the last axis, with gradient 0 (not NaN) at v = 0."""
    sq = jnp.sum(v * v, axis=-1)
    pos = sq > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, sq, jnp.ones_like(sq))), jnp.zeros_like(sq))


def regression_loss(
    model, x: jax.Array, phi, target: jax.Array, *, lam, penalty: str, scale: float = 1.0
):
    """The loss and its parts.

    Args:
      model: the potential D, ``[m, d] → [m]``.
      x: noise ``[m, d]``.
      phi: value targets H_i ``[m]`` (mean 0), or ``None`` for no value term.
      target: displacement targets t_i ``[m, d]``.
      lam: weight λ of the gradient penalty.
      penalty: ``"vector"``, ``"vector_l1"`` or ``"norm"``.
      scale: a length scale of the codes (their spread); the loss is made scale-free by
        dividing each term by the matching power of it (value terms by scale⁴, squared
        penalties by scale², ``"vector_l1"`` by scale), so that the optimiser sees gradients of
        the same size for codes of any scale (Adam's ε would otherwise stall training at 1e-6).

    Returns:
      ``(loss, aux)`` with ``aux`` a dict of the value and penalty terms and the relative map
      error ``mean‖∇D − t‖² / mean‖t‖²``.

    Raises:
      ValueError: unknown ``penalty``.
    """
    d, vjp = jax.vjp(model, x)
    (g,) = vjp(jnp.ones_like(d))
    value = jnp.zeros((), d.dtype) if phi is None else jnp.mean((d - phi.astype(d.dtype)) ** 2)
    target = target.astype(g.dtype)
    err = jnp.sum((g - target) ** 2, axis=-1)
    scale2 = jnp.mean(jnp.sum(target**2, axis=-1))
    tiny = jnp.asarray(1e-30, g.dtype)
    if penalty == "vector":
        pen = jnp.mean(err)
    elif penalty == "norm":
        pen = jnp.mean((_safe_norm(g) - _safe_norm(target)) ** 2)
    elif penalty == "vector_l1":
        delta = jax.lax.stop_gradient(1e-3 * jnp.sqrt(scale2 + tiny))
        pen = jnp.mean(jnp.sqrt(err + delta**2) - delta)
    else:
        raise ValueError(f"penalty must be one of {PENALTIES}, got {penalty!r}")
    map_error = jnp.mean(err) / jnp.maximum(scale2, tiny)
    s = jnp.asarray(scale, d.dtype)
    value = value / s**4
    pen = pen / (s if penalty == "vector_l1" else s * s)
    loss = value + jnp.asarray(lam, d.dtype) * pen
    return loss, {"value_loss": value, "penalty_loss": pen, "map_error": map_error}
