"""The package's layering (docs/architecture.md): what importing the library pulls in."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Optional dependencies of the digits demo, the figures and the progress bars.
HEAVY = ("matplotlib", "sklearn", "tqdm")


def _loaded_after(statement: str, names: tuple[str, ...]) -> list[str]:
    """Runs ``statement`` in a fresh interpreter; returns which of ``names`` it imported."""
    code = f"import sys\n{statement}\nprint(','.join(n for n in {names!r} if n in sys.modules))"
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    return [n for n in out.stdout.strip().split(",") if n]


def test_import_latentot_is_light():
    names = (*HEAVY, "latentot.digits", "latentot.aeot")
    assert _loaded_after("import latentot", names) == []


def test_cli_imports_neither_the_demo_nor_heavy_dependencies():
    names = (*HEAVY, "latentot.digits")
    assert _loaded_after("import latentot.cli", names) == []
