"""``aeot.fit(mesh=...)`` with the default sampler on a mesh across two CPU processes.

``tests/multiprocess_checks.py`` launches two processes (``jax.distributed`` on localhost,
gloo collectives, simulated devices) and a single-process reference; see it for what is
checked. Slow (about a minute or two per input on two cores) and outside CI.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tests" / "multiprocess_checks.py"


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["numpy", "global"])
def test_pursuit_across_two_processes(kind):
    """Both processes build the same frame (k, layers, arrays) as a single process would
    (k and layers), and their sampler's marginals match the single-process sampler's."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), kind, "2"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=900,
    )
    out = proc.stdout + proc.stderr
    if proc.returncode != 0 or f"OK multiprocess {kind}" not in proc.stdout:
        pytest.fail(f"two-process check '{kind}' failed (exit {proc.returncode}):\n{out[-6000:]}")
    assert "processes agree" in proc.stdout
