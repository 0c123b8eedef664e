"""AE-OT (Liu et al.): the batch LP, a potential network and the latent sampler z + ∇D(z)."""

from latentot.aeot.lp import BatchLP, solve_batch

__all__ = ["BatchLP", "solve_batch"]
