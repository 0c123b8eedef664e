"""Executes the eight-Gaussians notebook in its fast mode (jupytext → nbformat → nbclient)."""

import os
import pathlib

import pytest

jupytext = pytest.importorskip("jupytext")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_eight_gaussians_notebook_runs_fast(monkeypatch):
    nb = jupytext.read(ROOT / "notebooks" / "aeot_eight_gaussians.py")
    monkeypatch.setenv("LATENTOT_FAST", "1")
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    )
    client.execute()
    outputs = "".join(
        o.get("text", "") for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs
    )
    assert "fast mode" in outputs
    assert "within 3σ" in outputs
    images = [
        o
        for cell in nb.cells
        if cell.cell_type == "code"
        for o in cell.outputs
        if "image/png" in o.get("data", {})
    ]
    assert len(images) >= 2  # training curves and the Fig. 2 panels
