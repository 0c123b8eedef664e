"""AE-OT (Liu et al.): the batch LP, a potential network, training and the latent sampler."""

from latentot.aeot.bures import bures_map
from latentot.aeot.certificate import TransportGap, transport_gap, transport_gap_from_samples
from latentot.aeot.checkpoint import load, save
from latentot.aeot.datasets import eight_gaussians, eight_gaussians_report, w2_exact
from latentot.aeot.lp import BatchLP, BatchLPSolver, solve_batch
from latentot.aeot.potential import Potential
from latentot.aeot.progress import FitProgress
from latentot.aeot.sampler import Sampler
from latentot.aeot.train import TrainingDivergedError, fit, resolve_method
from latentot.aeot.trainer import Trainer, TrainState, default_optimizer

__all__ = ["BatchLP", "BatchLPSolver", "solve_batch"]
__all__ += [
    "FitProgress",
    "Potential",
    "Sampler",
    "TrainState",
    "Trainer",
    "TrainingDivergedError",
    "TransportGap",
    "bures_map",
    "default_optimizer",
    "eight_gaussians",
    "eight_gaussians_report",
    "fit",
    "load",
    "resolve_method",
    "save",
    "transport_gap",
    "transport_gap_from_samples",
    "w2_exact",
]
