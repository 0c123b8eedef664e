"""``latentot demo --fast`` end to end: figures, report and tables, through the CLI.

The longest test of the suite (100–130 s, nearly all of it XLA compilations of the demo's
models; a budget of fewer steps measured barely faster), so it is a ``slow`` test, run by hand
before a release. In CI the demo's parts are covered by ``tests/digits`` (the tables at tiny
budgets, the claims) and ``tests/test_cli.py`` (the demo's progress lines and output checks).
"""

import json
import re

import pytest

from latentot.digits import demo
from tests.test_cli import PNG, run


@pytest.mark.slow
def test_demo_fast_end_to_end(tmp_path):
    proc = run("demo", "--fast", "--seeds", 1, "--out", "out", cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    out = tmp_path / "out"
    for name in demo.FIGURES:
        assert (out / name).read_bytes().startswith(PNG), name
    assert not list(out.glob(".*.tmp"))
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["fast"] is True and report["settings"]["seeds"] == 1
    assert sorted(report["figures"]) == sorted(demo.FIGURES)
    liu, agu = report["tables"]["liu"], report["tables"]["agustsson"]
    wide = report["tables"]["liu_wide"]
    assert len(liu["rows"]) == 5 and len(wide["rows"]) == 5 and len(agu["rows"]) == 15
    assert liu["settings"]["latent_dim"] == 8 and wide["settings"]["latent_dim"] == 32
    for table in (liu, wide, agu):
        ref = table["rows"]["real digits (held out)"]
        # Held-out real digits: the scorer recognises them, all ten classes are there.
        assert ref["mean"]["inception_score"] > 8.0  # 8.64 measured with the fast scorer; max 10
        assert ref["mean"]["coverage"] == 1.0
        for row in table["rows"].values():
            assert len(row["runs"]) == 1
            assert row["runs"][0]["n"] == report["settings"]["budget"]["n_samples"]
    assert len(report["claims"]) == 10
    real = report["real_interpolation"]["rows"]
    assert {"linear midpoints", "SLERP midpoints", "AE-OT matched midpoints"} <= set(real)
    assert "## Interpolating real digits through the AE-OT map" in (out / "report.md").read_text()
    assert set(report["mismatch"]) == {"uniform", "Gaussian"}
    stages, total = report["timings"]["stages"], report["timings"]["total"]
    for clock in ("wall_s", "cpu_s"):  # the stages run one after the other, inside the total
        assert 0 <= sum(t[clock] for t in stages.values()) <= total[clock]
    md = (out / "report.md").read_text()
    assert "Liu et al. Table 1 analogue" in md and "Agustsson et al. Table 2 analogue" in md
    assert "## The same at latent dimension 32" in md
    # The report records the command as typed.
    assert report["command"] == "latentot demo --fast --seeds 1 --out out"
    assert "Command: `latentot demo --fast --seeds 1 --out out`" in md
    # Without a terminal: a timestamped line per model and per figure, on stderr.
    for stage in (
        "Liu table (d = 8), seed 1/1: AE-OT",
        "Liu table (d = 32), seed 1/1: AE-OT",
        "Agustsson table, seed 1/1: WGAN-GP, Gaussian prior",
        "figures: mismatch_fig1.png (7/10)",
        "figures: interpolation_codes.png (10/10)",
        "done in",
    ):
        assert re.search(r"^latentot: \[[0-9:]+( s)?\] " + re.escape(stage), proc.stderr, re.M), (
            stage,
            proc.stderr,
        )
    assert "![samples.png](samples.png)" in md
    assert "Liu et al. Table 1 analogue" in proc.stdout
