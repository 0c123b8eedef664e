"""Sharded matched operators and data-parallel ``aeot.fit`` on 8 simulated CPU devices.

The device count is fixed when JAX starts, so the checks run in a subprocess
(``tests/sharding_checks.py``) with ``--xla_force_host_platform_device_count=8``; the rest of the
suite keeps one device. See that script for what each section asserts.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tests" / "sharding_checks.py"


def _run(section: str, devices: int = 8) -> str:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["JAX_PLATFORMS"] = "cpu"
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), section, str(devices)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=600,
    )
    out = proc.stdout + proc.stderr
    if proc.returncode != 0 or f"OK {section}" not in proc.stdout:
        pytest.fail(
            f"sharding checks '{section}' on {devices} simulated devices failed "
            f"(exit {proc.returncode}):\n{out[-6000:]}",
            pytrace=False,
        )
    return proc.stdout


@pytest.mark.slow  # 50–75 s; the data-parallel fit below stays in CI
def test_matched_operators_keep_batch_sharding():
    """Every matched operator (and the Cauchy interpolations): output sharded like the input,
    values equal to one device, and no collective that moves the batch; the same under Explicit
    mesh axes (jax.make_mesh's default), with and without jax.set_mesh."""
    out = _run("ops")
    for name in (
        "matched_lerp",
        "matched_combine",
        "matched_grid",
        "matched_analogy",
        "matched_vicinity",
        "matched_random_walk",
        "cauchy_lerp",
        "spherical_cauchy_lerp",
    ):
        assert name in out, f"{name} was not checked"
    assert out.count("Explicit axes ok") == 11


@pytest.mark.heavy
def test_fit_data_parallel():
    """fit(mesh=...): one device == no mesh; 2 devices run with replicated parameters, sharded
    codes never gathered, gradients averaged over devices, resume with a mesh (2 devices in CI:
    the same checks as 8, with cheaper compilations; 8 devices in the slow test below)."""
    out = _run("fit", devices=2)
    assert "resume with a mesh == uninterrupted" in out


@pytest.mark.slow  # 45 s on a 2-core machine
def test_fit_data_parallel_on_8_devices():
    """The data-parallel checks of ``test_fit_data_parallel`` on 8 simulated devices."""
    out = _run("fit", devices=8)
    assert "resume with a mesh == uninterrupted" in out
