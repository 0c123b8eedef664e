"""The verdict of benchmarks/aeot_data_scaling.py, and a tiny run of it end to end."""

import importlib.util
import math
import pathlib
import sys

import pytest

_PATH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "aeot_data_scaling.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("aeot_data_scaling", _PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


def test_worse_pairs_flags_only_a_worsening_beyond_the_tolerance(bench):
    rows = [
        {"n": 100_000, "c2st": 0.70, "ks": 0.030},
        {"n": 20_000, "c2st": 0.68, "ks": 0.040},  # unsorted on purpose
        {"n": 400_000, "c2st": 0.69, "ks": 0.045},
        {"n": 50_000, "error": "failed: out of memory"},
    ]
    assert bench.worse_pairs(rows, ["ks"]) == ["ks: N = 100000 → 400000: 0.030 → 0.045"]
    # 0.70 − 0.68 = 0.02 > 0.01; 0.69 − 0.68 = 0.01 is within the tolerance
    assert bench.worse_pairs(rows, ["c2st"]) == ["c2st: N = 20000 → 100000: 0.680 → 0.700"]
    assert bench.worse_pairs(rows, ["c2st", "ks"], tolerance=0.05) == []


def test_worse_pairs_counts_a_nan_score_as_worse(bench):
    rows = [{"n": 10, "ks": 0.1}, {"n": 20, "ks": math.nan}]
    assert len(bench.worse_pairs(rows, ["ks"])) == 1
    # a finite score after a NaN one is no worsening
    assert bench.worse_pairs([{"n": 10, "ks": math.nan}, {"n": 20, "ks": 0.5}], ["ks"]) == []


def test_sizes_are_checked(bench):
    assert bench._sizes("3000,1000") == (1000, 3000)
    for bad in ("1000,1000", "0,10", "-5"):
        with pytest.raises(ValueError, match="distinct positive"):
            bench._sizes(bad)


@pytest.mark.slow
def test_tiny_bimodal_run_end_to_end(bench, tmp_path):
    """Two fits in their subprocesses, their rows, the verdict and the JSON file."""
    out = tmp_path / "out.json"
    res = bench.main(
        ["--cases", "bimodal", "--sizes", "1500,3000", "--dim", "40", "--json", str(out)]
    )["bimodal"]
    assert [r["n"] for r in res["rows"]] == [1500, 3000]
    for r in res["rows"]:
        assert "error" not in r, r
        assert r["method"] == "pursuit" and r["fit_s"] > 0 and r["growth_mib"] > 0
        assert 0 <= r["ks"] <= 1 and r["ks_linear"] > 0.08  # Gaussian marginals fail the floor
    assert res["verdict"].startswith("verdict bimodal d=40: KS at N = 3000")
    assert out.exists()
