"""Independent references for the tests: scipy.stats laws of the priors, and user-defined priors.

The user priors implement only the four required methods of the protocol (no sf/isf, no
loc/scale), as a user would, so they exercise the library's generic path.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import scipy.stats as st

import latentot as lo


def scipy_law(prior):
    """The scipy.stats distribution of one component of a latentot prior."""
    if isinstance(prior, lo.Uniform):
        return st.uniform(float(prior.low), float(prior.high) - float(prior.low))
    family = {
        lo.Gaussian: st.norm,
        lo.Cauchy: st.cauchy,
        lo.Laplace: st.laplace,
        lo.Logistic: st.logistic,
    }
    if type(prior) in family:
        return family[type(prior)](float(prior.loc), float(prior.scale))
    return prior.scipy


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class StudentT2:
    """Student-t with 2 degrees of freedom (infinite variance), in closed form."""

    scipy = st.t(2)

    def sample(self, rng, shape, dtype=None):
        u = jax.random.uniform(rng, shape, dtype or jnp.result_type(float), 1e-7, 1 - 1e-7)
        return self.icdf(u)

    def log_prob(self, x):
        return -1.5 * jnp.log1p(x * x / 2) - math.log(2 * math.sqrt(2))

    def cdf(self, x):
        return 0.5 + x / (2 * jnp.sqrt(2 + x * x))

    def icdf(self, u):
        a = 4 * u * (1 - u)
        return 2 * (u - 0.5) * jnp.sqrt(2 / a)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Gumbel:
    """Standard Gumbel (maximum) law: skewed, so the sign of a weight matters."""

    scipy = st.gumbel_r()

    def sample(self, rng, shape, dtype=None):
        return jax.random.gumbel(rng, shape, dtype or jnp.result_type(float))

    def log_prob(self, x):
        return -x - jnp.exp(-x)

    def cdf(self, x):
        return jnp.exp(-jnp.exp(-x))

    def icdf(self, u):
        return -jnp.log(-jnp.log(u))


STANDARD = [lo.Gaussian(), lo.Uniform(), lo.Cauchy(), lo.Laplace(), lo.Logistic()]
SHIFTED = [
    lo.Gaussian(1.5, 2.0),
    lo.Uniform(-0.5, 3.0),
    lo.Cauchy(-2.0, 0.5),
    lo.Laplace(0.7, 3.0),
    lo.Logistic(-1.0, 0.25),
]
USER = [StudentT2(), Gumbel()]


def name(prior):
    fields = dataclasses.asdict(prior) if dataclasses.is_dataclass(prior) else {}
    args = ",".join(f"{v:g}" for v in fields.values() if isinstance(v, float))
    return f"{type(prior).__name__}({args})"
