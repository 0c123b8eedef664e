"""The one budget of the digits demo: model sizes, training steps and sample counts."""

from __future__ import annotations

import dataclasses

from latentot import _checks

__all__ = ["Budget"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Budget:
    """Model sizes, training budgets and sample counts of the digits demo.

    ``Budget()`` is the full run behind ``latentot demo`` (three seeds of both tables in about
    ten CPU minutes on 2 cores, see README.md); :meth:`fast` is a run of seconds with
    poor models, for tests and the notebooks' fast mode. The models' ``train_*`` functions take
    their default ``steps`` from ``Budget()``; pass ``steps=budget.<model>_steps`` for another.

    Attributes:
        classifier_steps: steps of the scoring classifier.
        autoencoder_steps: steps of the autoencoder whose codes AE-OT and the Gaussian fit model.
        vae_steps: steps of the VAE.
        gan_steps: generator steps of each WGAN-GP (5 critic steps each).
        aeot_steps: AE-OT training steps (fixed here rather than taken from
            :func:`latentot.aeot.fit`, so the demo's cost does not follow that function's
            defaults).
        aeot_batch_size: AE-OT batch LP size.
        latent_dim: latent dimension of the autoencoder and of the VAE.
        wide_latent_dim: latent dimension of the second Liu table (a wider autoencoder
            latent, where minibatch AE-OT used to fail).
        gan_latent_dim: latent dimension of the two WGAN-GP generators.
        n_samples: images per scored batch (every row of a table uses the same size).
        mismatch_samples: latent samples per mismatch statistic of the demo's report.
        figure_samples: latent samples behind the demo's norm histograms.

    Raises:
        ValueError: if a field is not a positive int (naming the field).
    """

    classifier_steps: int = 2000
    autoencoder_steps: int = 3000
    vae_steps: int = 4000
    gan_steps: int = 3000
    aeot_steps: int = 2000
    aeot_batch_size: int = 256
    latent_dim: int = 8
    wide_latent_dim: int = 32
    gan_latent_dim: int = 32
    n_samples: int = 300
    mismatch_samples: int = 20_000
    figure_samples: int = 200_000

    def __post_init__(self):
        for field in dataclasses.fields(self):
            _checks.check_positive_int(field.name, getattr(self, field.name))

    @classmethod
    def fast(cls) -> Budget:
        """A budget of seconds, for tests and the notebooks' fast mode (poor models)."""
        return cls(
            classifier_steps=300,
            autoencoder_steps=300,
            vae_steps=300,
            gan_steps=150,
            aeot_steps=60,
            mismatch_samples=2_000,
            figure_samples=20_000,
        )

    def as_dict(self) -> dict[str, int]:
        """The budget as a plain dict (JSON-ready)."""
        return dataclasses.asdict(self)
