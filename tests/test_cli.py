"""The ``latentot`` command line, run as ``python -m latentot`` in subprocesses where the
process matters (the installed entry point, a trained sampler, Ctrl-C, argparse's exits) and as
``cli.main`` in this process elsewhere (each subprocess pays an interpreter start and its own
XLA compilations).

Each subprocess run gets the repository root on ``PYTHONPATH``, so the tests work whether or
not latentot is installed in the interpreter running them.
"""

import errno
import inspect
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from latentot import cli

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


def run_in_process(*args, cwd, capsys, monkeypatch):
    """``cli.main`` in this process (no interpreter start): for the many error cases."""
    monkeypatch.chdir(cwd)
    capsys.readouterr()
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


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


FIT = ("fit", "codes.npy", "--steps", 200, "--batch-size", 128)


@pytest.fixture(scope="module")
def fit_proc(workdir, codes):
    """An uninterrupted `latentot fit` run, its output captured (stderr is not a terminal)."""
    proc = run(*FIT, "--out", "s.aeot", cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    assert "saved AE-OT sampler to s.aeot" in proc.stdout
    assert "transport gap" in proc.stdout  # the certificate that fit records
    assert "Traceback" not in proc.stderr
    return proc


@pytest.fixture(scope="module")
def sampler_path(workdir, fit_proc):
    return workdir / "s.aeot"


# --------------------------------------------------------------------------------------------
# Help.


@pytest.mark.parametrize(
    "command", [[], ["demo"], ["fit"], ["sample"], ["interpolate"], ["mismatch"]]
)
def test_help(command, tmp_path):
    proc = run(*command, "--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: latentot")
    expected = {
        (): ["demo", "fit", "sample", "interpolate", "mismatch"],
        ("mismatch",): ["--prior", "--dim"],
        ("interpolate",): ["--sampler", "--pairs"],
    }
    for word in expected.get(tuple(command), ["--"]):
        assert word in proc.stdout
    if command == ["fit"]:
        # Every hyperparameter shows aeot.fit's actual default, read from its signature.
        from latentot import aeot
        from latentot.aeot.train import METHOD_DEFAULTS

        defaults = {p.name: p.default for p in inspect.signature(aeot.fit).parameters.values()}
        text = " ".join(proc.stdout.split())  # argparse wraps lines
        for option, name in [
            ("--steps", "steps"),
            ("--method", "method"),
            ("--learning-rate", "learning_rate"),
            ("--lam", "lam"),
        ]:
            shown = re.search(re.escape(option) + r" [^(]*\(default: ([^)]*)\)", text)
            assert shown and shown.group(1) == str(defaults[name]), (option, shown)
        # The batch size's and the penalty's defaults depend on the method: all are shown.
        assert defaults["batch_size"] is None and defaults["penalty"] is None
        per_method = ", ".join(
            f"{v['batch_size']} with --method {k}" for k, v in METHOD_DEFAULTS.items()
        )
        assert f"(default: min(N, {per_method}))" in text
        for method, values in METHOD_DEFAULTS.items():
            assert f"{values['penalty']} with --method {method}" in text
        # ... and what auto means is the library's own threshold.
        from latentot.aeot.train import AUTO_MINIBATCH_MAX_DIM, AUTO_PURSUIT_MIN_DIM

        assert f"minibatch for codes of dimension <= {AUTO_MINIBATCH_MAX_DIM}," in text
        assert (
            f"debiased up to {AUTO_PURSUIT_MIN_DIM - 1}, pursuit from {AUTO_PURSUIT_MIN_DIM}"
            in text
        )


def test_version(tmp_path):
    import tomllib
    from importlib import metadata

    import latentot

    # One version: pyproject.toml's, read back through the package metadata everywhere.
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert metadata.version("latentot") == declared
    assert latentot.__version__ == declared
    proc = run("--version", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"latentot {declared}"


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


def test_fit_and_sample(workdir, sampler_path, codes, capsys, monkeypatch):
    # The sampler was trained by `python -m latentot fit` (fit_proc); sampling runs in process.
    def run(*args, cwd):
        return run_in_process(*args, cwd=cwd, capsys=capsys, monkeypatch=monkeypatch)

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


def test_fit_npz_with_key(workdir, codes, capsys, monkeypatch):
    proc = run_in_process(
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
        capsys=capsys,
        monkeypatch=monkeypatch,
    )
    assert proc.returncode == 0, proc.stderr
    from latentot import aeot

    sampler = aeot.load(workdir / "k.aeot")
    assert sampler.dim == 2
    assert type(sampler.prior).__name__ == "Uniform"


def test_fit_error_paths(workdir, codes, capsys, monkeypatch):
    np.save(workdir / "nan.npy", np.where(np.arange(512)[:, None] == 7, np.nan, codes))
    np.save(workdir / "rank1.npy", codes[:, 0])
    np.save(workdir / "rank3.npy", codes.reshape(8, 64, 2))
    (workdir / "corrupt.npy").write_bytes(b"\x93NUMPY garbage" + os.urandom(64))
    (workdir / "text.npy").write_text("0.5 1.5\n2.5 3.5\n")
    cases = [
        (["missing.npy"], ["missing.npy", "does not exist"]),
        (["nan.npy"], ["NaN", "row 7"]),
        (["rank1.npy"], ["rank 2", "rank 1"]),
        (["rank3.npy"], ["rank 2", "rank 3"]),
        (["corrupt.npy"], ["cannot read codes"]),
        (["text.npy"], ["'text.npy' is a text file", "numpy.save"]),
        (["codes.npz"], ["2 arrays", "--key"]),
        (["codes.npz", "--key", "nope"], ["no array 'nope'"]),
        (["codes.npy", "--batch-size", 4096], ["exceeds the number of codes"]),
    ]
    for i, (args, fragments) in enumerate(cases):
        # The console script for the first case, the same main() in this process for the rest.
        runner = run if i == 0 else run_in_process
        extra = {} if i == 0 else {"capsys": capsys, "monkeypatch": monkeypatch}
        proc = runner("fit", *args, "--out", "never.aeot", "--steps", 5, cwd=workdir, **extra)
        assert_user_error(proc, *fragments)
    assert not (workdir / "never.aeot").exists()


def test_sample_error_paths(workdir, sampler_path, capsys, monkeypatch):
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
    for i, (name, fragments) in enumerate(cases):
        runner = run if i == 1 else run_in_process
        extra = {} if i == 1 else {"capsys": capsys, "monkeypatch": monkeypatch}
        proc = runner("sample", name, "-n", 10, "--out", "never.npy", cwd=workdir, **extra)
        assert_user_error(proc, *fragments)
    assert not (workdir / "never.npy").exists()


# --------------------------------------------------------------------------------------------
# Progress without a terminal, checkpoints and resume, failed writes.


def test_fit_logs_progress_without_a_terminal(fit_proc):
    lines = [ln for ln in fit_proc.stderr.splitlines() if "] fit: step " in ln]
    steps = [int(re.search(r"step (\d+)/200", ln).group(1)) for ln in lines]
    # A line at least every 10% of the 200 steps, the last one at the end, with the loss and
    # the elapsed time.
    assert steps[-1] == 200 and steps[0] <= 20
    assert np.all(np.diff(steps) <= 20), steps
    pattern = r"latentot: \[[0-9:]+( s)?\] fit: step \d+/200 \(\d+%\), loss -?[0-9.e+-]+"
    assert all(re.fullmatch(pattern, ln) for ln in lines), lines


def test_fit_progress_lines_every_tenth_or_30_seconds():
    import io

    out = io.StringIO()
    now = [0.0]
    progress = cli.FitProgress(1000, mode="log", stream=out, clock=lambda: now[0])
    for step in range(50, 1001, 50):
        now[0] += 1.0 if step != 700 else 31.0  # one chunk takes 31 s
        progress(step, {"loss": np.float32(1.0 / step)})
    logged = [int(m) for m in re.findall(r"step (\d+)/1000", out.getvalue())]
    # The first chunk, then every 100 steps (10%), a line after the 31 s chunk, the last step.
    assert logged == [50, 150, 250, 350, 450, 550, 650, 700, 800, 900, 1000]
    assert out.getvalue().splitlines()[-1] == (
        "latentot: fit: step 1000/1000 (100%), loss 0.001, 50 s elapsed"
    )
    quiet = io.StringIO()
    off = cli.FitProgress(1000, mode="off", stream=quiet)
    off(1000, {"loss": 1.0})
    assert quiet.getvalue() == ""


def test_demo_heartbeat_without_a_terminal(capsys):
    with cli._Heartbeat(quiet=False, tty=False, every_s=0.05) as beat:
        beat.say("Liu table, seed 1/3: VAE (4000 steps)")
        time.sleep(0.3)
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "latentot: [0 s] Liu table, seed 1/3: VAE (4000 steps)"
    assert "still running: Liu table, seed 1/3: VAE (4000 steps)" in err[1]
    with cli._Heartbeat(quiet=True, tty=False, every_s=0.05) as beat:
        beat.say("stage")
        time.sleep(0.2)
    assert capsys.readouterr().err == ""


# Two CLI subprocesses that each compile and train (30–37 s): run by hand with -m slow. Exact
# resume itself is checked in CI by tests/aeot/test_fit.py::test_resume_matches_uninterrupted_run.
@pytest.mark.slow
def test_fit_resume_after_ctrl_c_equals_the_uninterrupted_run(workdir, sampler_path):
    from latentot import aeot

    ckpt = workdir / "r.ckpt"
    env = dict(os.environ, PYTHONPATH=str(ROOT), MPLBACKEND="Agg")
    args = [*map(str, FIT), "--out", "r.aeot", "--checkpoint", ckpt.name]
    # A real SIGINT, sent by the CLI process to itself right after its first checkpoint is
    # written: polling for the file from here raced with the end of the run on a loaded machine.
    # A process started in the background by a non-interactive shell (as CI may be) inherits
    # SIGINT ignored; restore Python's default handler, as in a terminal.
    interrupt_after_first_checkpoint = (
        "import os, runpy, signal, sys\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "from latentot.aeot import train\n"
        "save = train._save_training\n"
        "def save_then_interrupt(*a, **k):\n"
        "    save(*a, **k)\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "train._save_training = save_then_interrupt\n"
        "sys.argv = ['latentot', *sys.argv[1:]]\n"
        "runpy.run_module('latentot', run_name='__main__')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", interrupt_after_first_checkpoint, *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    err = proc.stderr
    assert proc.returncode == 130, err
    assert "interrupted; the last training checkpoint is 'r.ckpt': add --resume" in err
    assert len(aeot.load(ckpt).history["loss"]) < 200
    assert not (workdir / "r.aeot").exists()
    # Resume; the final write fails (no such directory): the message says where the result is.
    resumed = run(
        *FIT, "--out", "/proc/r.aeot", "--checkpoint", ckpt.name, "--resume", "-q", cwd=workdir
    )
    assert_user_error(resumed, "cannot write --out '/proc/r.aeot'", "in the checkpoint 'r.ckpt'")
    a, b = aeot.load(sampler_path), aeot.load(ckpt)
    for x, y in zip(jax_leaves(a.params), jax_leaves(b.params), strict=True):
        np.testing.assert_array_equal(x, y)


def test_resume_needs_an_existing_checkpoint(workdir, codes):
    assert_user_error(
        run(*FIT, "--out", "x.aeot", "--resume", cwd=workdir), "--resume needs --checkpoint"
    )
    assert_user_error(
        run(*FIT, "--out", "x.aeot", "--checkpoint", "no.ckpt", "--resume", cwd=workdir),
        "'no.ckpt' does not exist",
    )


def jax_leaves(tree):
    import jax

    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def test_failed_writes_are_one_line_errors(workdir, sampler_path, capsys, monkeypatch):
    # A path the checks accept (its directory exists) but the kernel refuses.
    args = ("sample", sampler_path, "-n", 10, "--out", "/proc/x.npy")
    assert_user_error(
        run_in_process(*args, cwd=workdir, capsys=capsys, monkeypatch=monkeypatch),
        "cannot write --out '/proc/x.npy'",
    )


def test_full_disk_keeps_the_trained_sampler(workdir, codes, monkeypatch, capsys):
    """ENOSPC on --out after training: the sampler goes to a fallback file, named in one line."""
    import latentot._io

    real_replace = os.replace

    def full_disk(src, dst):
        if os.path.basename(dst) == "full.aeot":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), src)
        return real_replace(src, dst)

    monkeypatch.setattr(latentot._io.os, "replace", full_disk)
    monkeypatch.chdir(workdir)
    args = ["fit", "codes.npy", "--out", "full.aeot", "--steps", 3, "--batch-size", 64, "-q"]
    assert cli.main(list(map(str, args))) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    m = re.fullmatch(
        r"latentot: error: cannot write --out 'full.aeot': No space left on device; the trained "
        r"sampler was saved to '(.+\.aeot)' instead",
        err,
    )
    assert m, err
    from latentot import aeot

    assert aeot.load(m.group(1)).dim == 2
    os.remove(m.group(1))
    assert not (workdir / "full.aeot").exists()
    # Any other write (here the mismatch JSON and figure) reports the destination, not a temp file.
    monkeypatch.setattr(latentot._io.os, "replace", lambda src, dst: full_disk(src, "full.aeot"))
    assert cli.main(["mismatch", "--prior", "uniform", "--dim", "2", "-n", "50", "--out", "m"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("latentot: error: cannot write the figure 'm/mismatch_uniform_d2.png'")
    assert err.endswith("No space left on device")
    # A write deep inside the demo fails in write_bytes_atomic's temporary file: main() names
    # the destination.
    tmp = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "out/.samples.png.k2j4_x.tmp")
    assert cli._os_error(tmp) == "No space left on device: 'out/samples.png'"


# --------------------------------------------------------------------------------------------
# mismatch.


def test_mismatch_uniform(tmp_path, capsys, monkeypatch):
    args = ["--prior", "uniform", "--dim", 12, "-n", 4000, "--out", "m"]
    proc = run_in_process("mismatch", *args, cwd=tmp_path, capsys=capsys, monkeypatch=monkeypatch)
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


def test_mismatch_cauchy_heavy_tails(tmp_path, capsys, monkeypatch):
    args = ["--prior", "cauchy", "--dim", 4, "-n", 2000, "--out", "."]
    proc = run_in_process("mismatch", *args, cwd=tmp_path, capsys=capsys, monkeypatch=monkeypatch)
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
# interpolate.


def test_interpolate_writes_matched_paths_and_rejects_bad_input(
    workdir, sampler_path, capsys, monkeypatch
):
    import jax

    from latentot import aeot

    sampler = aeot.load(sampler_path)
    own = np.asarray(sampler.sample(jax.random.key(3), 6))
    np.save(workdir / "own.npy", own)
    args = ("interpolate", "--sampler", sampler_path.name, "--codes", "own.npy")
    extra = {"cwd": workdir, "capsys": capsys, "monkeypatch": monkeypatch}
    proc = run_in_process(
        *args, "--pairs", "0:1,2:3", "--steps", 5, "--out", "p.npy", "--allow-unconverged", **extra
    )
    assert proc.returncode == 0, proc.stderr
    assert "wrote 2 matched paths of 5 codes" in proc.stdout
    paths = np.load(workdir / "p.npy")
    assert paths.shape == (2, 5, 2) and np.all(np.isfinite(paths))
    scale = float(np.sqrt(np.mean(np.var(own, axis=0))))
    np.testing.assert_allclose(paths[:, 0], own[[0, 2]], atol=0.05 * scale)
    np.testing.assert_allclose(paths[:, -1], own[[1, 3]], atol=0.05 * scale)
    np.save(workdir / "wide.npy", np.zeros((4, 3), np.float32))
    cases = [
        (("--pairs", "0:9"), ["0:9", "out of range"]),
        (("--pairs", "0-1"), ["--pairs must be row pairs"]),
        (("--pairs", "0:1", "--codes", "wide.npy"), ["dimension 3", "sampler 2"]),
        (("--pairs", "0:1", "--codes", "missing.npy"), ["does not exist"]),
        (("--pairs", "0:1", "--sampler", "own.npy"), ["not a valid latentot AE-OT checkpoint"]),
    ]
    for more, fragments in cases:
        proc = run_in_process(*args, *more, "--out", "never.npy", **extra)
        assert_user_error(proc, *fragments)
    assert not (workdir / "never.npy").exists()
