"""The ``latentot`` command line, run as ``python -m latentot`` in subprocesses.

Each run gets the repository root on ``PYTHONPATH``, so the tests work whether or not latentot
is installed in the interpreter running them.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from latentot import cli
from latentot.digits import demo

ROOT = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"


def run(*args, cwd, timeout=300):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["MPLBACKEND"] = "Agg"
    return subprocess.run(
        [sys.executable, "-m", "latentot", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_user_error(proc, *fragments):
    """Exit status 2, one line on stderr naming the problem, no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("latentot: error: ")
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def codes(workdir):
    """Codes N(3, 0.5²) in d = 2, saved as .npy and as a two-array .npz."""
    x = np.random.default_rng(0).normal(3.0, 0.5, size=(512, 2)).astype(np.float32)
    np.save(workdir / "codes.npy", x)
    np.savez(workdir / "codes.npz", codes=x, labels=np.arange(512))
    return x


@pytest.fixture(scope="module")
def sampler_path(workdir, codes):
    proc = run(
        "fit", "codes.npy", "--out", "s.aeot", "--steps", 200, "--batch-size", 128, cwd=workdir
    )
    assert proc.returncode == 0, proc.stderr
    assert "saved AE-OT sampler to s.aeot" in proc.stdout
    assert "Traceback" not in proc.stderr
    return workdir / "s.aeot"


# --------------------------------------------------------------------------------------------
# Help.


@pytest.mark.parametrize("command", [[], ["demo"], ["fit"], ["sample"], ["mismatch"]])
def test_help(command, tmp_path):
    proc = run(*command, "--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: latentot")
    expected = {(): ["demo", "fit", "sample", "mismatch"], ("mismatch",): ["--prior", "--dim"]}
    for word in expected.get(tuple(command), ["--"]):
        assert word in proc.stdout


def test_main_in_process_help_exits_zero(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    assert "mismatch" in capsys.readouterr().out


def test_missing_subcommand_is_a_usage_error(tmp_path):
    proc = run(cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr


# --------------------------------------------------------------------------------------------
# fit and sample.


def test_fit_and_sample(workdir, sampler_path, codes):
    proc = run("sample", sampler_path, "-n", 1000, "--out", "x.npy", "--seed", 1, cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    x = np.load(workdir / "x.npy")
    assert x.shape == (1000, 2) and x.dtype == np.float32
    assert np.isfinite(x).all()
    # The sampler maps N(0, I) noise towards the codes' law N(3, 0.5²).
    np.testing.assert_allclose(x.mean(axis=0), codes.mean(axis=0), atol=0.5)
    assert np.all(x.std(axis=0) < 1.0)
    # Same seed, same samples; another seed, other samples.
    again = run("sample", sampler_path, "-n", 1000, "--out", "y.npy", "--seed", 1, cwd=workdir)
    other = run("sample", sampler_path, "-n", 1000, "--out", "z.npy", "--seed", 2, cwd=workdir)
    assert again.returncode == other.returncode == 0
    np.testing.assert_array_equal(np.load(workdir / "y.npy"), x)
    assert not np.array_equal(np.load(workdir / "z.npy"), x)
    assert not list(workdir.glob(".*.tmp"))


def test_fit_npz_with_key(workdir, codes):
    proc = run(
        "fit",
        "codes.npz",
        "--key",
        "codes",
        "--out",
        "k.aeot",
        "--steps",
        5,
        "--prior",
        "uniform",
        cwd=workdir,
    )
    assert proc.returncode == 0, proc.stderr
    from latentot import aeot

    sampler = aeot.load(workdir / "k.aeot")
    assert sampler.dim == 2
    assert type(sampler.prior).__name__ == "Uniform"


def test_fit_error_paths(workdir, codes):
    np.save(workdir / "nan.npy", np.where(np.arange(512)[:, None] == 7, np.nan, codes))
    np.save(workdir / "rank1.npy", codes[:, 0])
    np.save(workdir / "rank3.npy", codes.reshape(8, 64, 2))
    (workdir / "corrupt.npy").write_bytes(b"\x93NUMPY garbage" + os.urandom(64))
    cases = [
        (["missing.npy"], ["missing.npy", "does not exist"]),
        (["nan.npy"], ["NaN", "row 7"]),
        (["rank1.npy"], ["rank 2", "rank 1"]),
        (["rank3.npy"], ["rank 2", "rank 3"]),
        (["corrupt.npy"], ["cannot read codes"]),
        (["codes.npz"], ["2 arrays", "--key"]),
        (["codes.npz", "--key", "nope"], ["no array 'nope'"]),
        (["codes.npy", "--batch-size", 4096], ["exceeds the number of codes"]),
    ]
    for args, fragments in cases:
        proc = run("fit", *args, "--out", "never.aeot", "--steps", 5, cwd=workdir)
        assert_user_error(proc, *fragments)
    assert not (workdir / "never.aeot").exists()


def test_sample_error_paths(workdir, sampler_path):
    good = sampler_path.read_bytes()
    (workdir / "truncated.aeot").write_bytes(good[: len(good) // 2])
    corrupted = bytearray(good)
    corrupted[-10] ^= 0xFF
    (workdir / "corrupted.aeot").write_bytes(bytes(corrupted))
    (workdir / "empty.aeot").write_bytes(b"")
    cases = [
        ("missing.aeot", ["missing.aeot", "does not exist"]),
        ("truncated.aeot", ["truncated"]),
        ("corrupted.aeot", ["checksum"]),
        ("empty.aeot", ["empty"]),
        ("codes.npy", ["not a valid latentot AE-OT checkpoint"]),  # a foreign file
    ]
    for name, fragments in cases:
        proc = run("sample", name, "-n", 10, "--out", "never.npy", cwd=workdir)
        assert_user_error(proc, *fragments)
    assert not (workdir / "never.npy").exists()


# --------------------------------------------------------------------------------------------
# mismatch.


def test_mismatch_uniform(tmp_path):
    args = ["--prior", "uniform", "--dim", 12, "-n", 4000, "--out", "m"]
    proc = run("mismatch", *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for word in ("Uniform prior, d = 12", "linear", "slerp", "matched", "ks"):
        assert word in proc.stdout
    report = json.loads((tmp_path / "m" / "mismatch_uniform_d12.json").read_text())
    rows = report["rows"]
    # E‖z‖² = d/3 = 4 for prior samples and matched midpoints, d/6 = 2 for linear ones.
    assert rows["prior"]["mean_sq_norm"] == pytest.approx(4.0, rel=0.05)
    assert rows["matched"]["mean_sq_norm"] == pytest.approx(4.0, rel=0.05)
    assert rows["linear"]["mean_sq_norm"] == pytest.approx(2.0, rel=0.05)
    assert rows["matched"]["ks"] < 0.02 < rows["linear"]["ks"]
    assert (tmp_path / "m" / "mismatch_uniform_d12.png").read_bytes().startswith(PNG)


def test_mismatch_cauchy_heavy_tails(tmp_path):
    proc = run("mismatch", "--prior", "cauchy", "--dim", 4, "-n", 2000, "--out", ".", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Cauchy prior, d = 4" in proc.stdout
    assert (tmp_path / "mismatch_cauchy_d4.png").read_bytes().startswith(PNG)


def test_mismatch_bad_arguments(tmp_path):
    (tmp_path / "file").write_text("x")
    assert_user_error(
        run("mismatch", "--prior", "gaussian", "--dim", 2, "--out", "file", cwd=tmp_path),
        "not a directory",
    )
    proc = run("mismatch", "--prior", "student", "--dim", 2, cwd=tmp_path)
    assert proc.returncode == 2 and "invalid choice" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run("mismatch", "--prior", "gaussian", "--dim", 0, cwd=tmp_path)
    assert proc.returncode == 2 and "positive integer" in proc.stderr


# --------------------------------------------------------------------------------------------
# demo.


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
    assert len(liu["rows"]) == 5 and len(agu["rows"]) == 15
    for table in (liu, agu):
        ref = table["rows"]["real digits (held out)"]
        # Held-out real digits: the scorer recognises them, all ten classes are there.
        assert ref["mean"]["inception_score"] > 8.0  # 8.64 measured with the fast scorer; max 10
        assert ref["mean"]["coverage"] == 1.0
        for row in table["rows"].values():
            assert len(row["runs"]) == 1
            assert row["runs"][0]["n"] == report["settings"]["budget"]["n_samples"]
    assert len(report["claims"]) == 10
    assert set(report["mismatch"]) == {"uniform", "Gaussian"}
    stages, total = report["timings"]["stages"], report["timings"]["total"]
    for clock in ("wall_s", "cpu_s"):  # the stages run one after the other, inside the total
        assert 0 <= sum(t[clock] for t in stages.values()) <= total[clock]
    md = (out / "report.md").read_text()
    assert "Liu et al. Table 1 analogue" in md and "Agustsson et al. Table 2 analogue" in md
    assert "![samples.png](samples.png)" in md
    assert "Liu et al. Table 1 analogue" in proc.stdout
