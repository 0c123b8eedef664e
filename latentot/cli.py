"""The ``latentot`` command line: ``demo``, ``fit``, ``sample``, ``interpolate`` and
``mismatch``.

Heavy imports (jax, flax, the models) happen inside the subcommands, so ``latentot --help``
answers at once. Bad input (a missing or unreadable file, a corrupt or foreign sampler, codes
with NaN or of the wrong rank, ...) and any failed write (a missing or read-only directory, a
full disk, ...) print one line ``latentot: error: ...`` to stderr and exit with status 2,
without a traceback. Progress goes to stderr: bars on a terminal, otherwise (logs, nohup, CI) a
line at least every 10% of the work or every 30 s; ``--quiet`` silences both.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["CLIError", "build_parser", "load_codes", "main"]


def __getattr__(name: str):
    # cli.FitProgress, kept for existing callers: it lives in latentot.aeot (a notebook's
    # progress bar too), imported on first use so that ``latentot --help`` does not import jax.
    if name == "FitProgress":
        from latentot.aeot.progress import FitProgress

        return FitProgress
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


PRIORS = ("gaussian", "uniform", "cauchy", "laplace", "logistic")
EXIT_USAGE = 2


class CLIError(Exception):
    """A user error: reported as one line on stderr, exit status 2."""


# --------------------------------------------------------------------------------------------
# Helpers (numpy only: the input checks run before jax is imported).


def _progress() -> bool:
    return sys.stderr.isatty()


def _log(message: str) -> None:
    print(f"latentot: {message}", file=sys.stderr, flush=True)


def _elapsed(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds >= 60 else f"{seconds} s"


class _Heartbeat:
    """Stage lines of a long command, and a line every ``every_s`` of silence when no terminal.

    ``say(message)`` prints ``latentot: [elapsed] message``. Without a terminal a daemon
    thread repeats the current stage with the elapsed time whenever ``every_s`` seconds pass
    without a line, so logs never go silent for long.
    """

    def __init__(self, *, quiet: bool, tty: bool, every_s: float = 30.0):
        self.quiet, self.tty, self.every_s = quiet, tty, every_s
        self._start = self._last = time.monotonic()
        self._stage = "starting"
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = None

    def __enter__(self):
        if not self.quiet and not self.tty:
            self._thread = threading.Thread(target=self._beat, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        if self._thread is not None:
            self._thread.join()

    def say(self, message: str) -> None:
        with self._lock:
            self._stage = message
            self._print(message)

    def _print(self, message: str) -> None:
        self._last = time.monotonic()
        if not self.quiet:
            _log(f"[{_elapsed(self._last - self._start)}] {message}")

    def _beat(self) -> None:
        while not self._done.wait(min(1.0, self.every_s)):
            with self._lock:
                if time.monotonic() - self._last >= self.every_s:
                    self._print(f"still running: {self._stage}")


def _argument(convert: Callable[[str], Any], valid: Callable[[Any], bool], expected: str):
    """An argparse ``type=``: converts the text and checks the value, with one clear message."""

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not valid(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


_positive_int = _argument(int, lambda v: v >= 1, "a positive integer")
_positive_float = _argument(float, lambda v: 0 < v < math.inf, "a positive number")
_non_negative_float = _argument(float, lambda v: 0 <= v < math.inf, "a number >= 0")
_unit_interval = _argument(float, lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]")


def _check_input_file(path: str, what: str) -> None:
    if not os.path.exists(path):
        raise CLIError(f"{what} {path!r} does not exist")
    if os.path.isdir(path):
        raise CLIError(f"{what} {path!r} is a directory, not a file")
    if not os.access(path, os.R_OK):
        raise CLIError(f"{what} {path!r} is not readable")


def _check_output_file(path: str, what: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise CLIError(f"{what} {path!r} is a directory")
    if not os.path.isdir(directory):
        raise CLIError(f"the directory of {what} {path!r} does not exist")
    if not os.access(directory, os.W_OK):
        raise CLIError(f"the directory of {what} {path!r} is not writable")


def _check_output_dir(path: str) -> None:
    if os.path.exists(path) and not os.path.isdir(path):
        raise CLIError(f"--out {path!r} exists and is not a directory")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise CLIError(f"cannot create the output directory {path!r}: {e.strerror}") from None
    if not os.access(path, os.W_OK):
        raise CLIError(f"the output directory {path!r} is not writable")


def _check_numpy_file(path: str) -> None:
    """Names what the file is when it is not a .npy / .npz file (np.load would say "pickle")."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as e:
        raise CLIError(f"cannot read codes file {path!r}: {e.strerror or e}") from None
    if head.startswith((b"\x93NUMPY", b"PK\x03\x04", b"PK\x05\x06")):
        return
    if not head:
        what = "is empty"
    elif head[:1] == b"\x80":
        what = "is a Python pickle, which latentot never loads (unsafe)"
    elif all(32 <= b < 127 or b in b"\t\r\n" for b in head):
        what = "is a text file"
    else:
        what = "is not a NumPy file"
    raise CLIError(
        f"codes file {path!r} {what}: expected a .npy or .npz file written by numpy.save "
        "or numpy.savez"
    )


def load_codes(path: str, *, key: str | None = None) -> Any:
    """Reads latent codes ``[N, d]`` from ``.npy`` or ``.npz``, checked for the CLI.

    Args:
        path: the file. A ``.npz`` archive needs ``key`` unless it holds a single array.
        key: name of the array inside a ``.npz`` archive.

    Returns:
        A float32 (or float64, kept) numpy array ``[N, d]`` of finite values.

    Raises:
        CLIError: missing or unreadable file, unknown key, wrong rank, non-numeric dtype,
            NaN or inf, or fewer than two codes.
    """
    import zipfile

    import numpy as np

    _check_input_file(path, "codes file")
    _check_numpy_file(path)
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CLIError(f"cannot read codes from {path!r} as .npy or .npz ({reason})") from None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            names = list(loaded.files)
            if key is None:
                if len(names) != 1:
                    listed = ", ".join(names) if names else "none"
                    raise CLIError(
                        f"{path!r} holds {len(names)} arrays ({listed}): choose one with --key"
                    )
                key = names[0]
            if key not in names:
                raise CLIError(f"{path!r} has no array {key!r} (it holds: {', '.join(names)})")
            try:
                codes = loaded[key]
            except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
                raise CLIError(f"cannot read array {key!r} of {path!r} ({e})") from None
    else:
        if key is not None:
            raise CLIError(f"--key applies to .npz archives; {path!r} holds a single array")
        codes = loaded
    if codes.dtype.kind not in "fiu":
        raise CLIError(f"codes in {path!r} must be numeric, got dtype {codes.dtype}")
    if codes.ndim != 2:
        raise CLIError(
            f"codes in {path!r} must have rank 2 [N, d], got rank {codes.ndim} "
            f"(shape {tuple(codes.shape)})"
        )
    if codes.shape[0] < 2 or codes.shape[1] < 1:
        raise CLIError(f"codes in {path!r} need N >= 2 rows and d >= 1, got {codes.shape}")
    codes = codes.astype(np.float64 if codes.dtype == np.float64 else np.float32)
    bad = ~np.isfinite(codes)
    if bad.any():
        rows = np.unique(np.nonzero(bad)[0])
        kind = "NaN" if np.isnan(codes).any() else "inf"
        count = int(bad.sum())
        raise CLIError(
            f"codes in {path!r} contain {kind} ({count} value{'s' * (count > 1)} in "
            f"{rows.size} row{'s' * (rows.size > 1)}, first row {int(rows[0])})"
        )
    return codes


def _make_prior(name: str) -> Any:
    import latentot

    return {
        "gaussian": latentot.Gaussian,
        "uniform": latentot.Uniform,
        "cauchy": latentot.Cauchy,
        "laplace": latentot.Laplace,
        "logistic": latentot.Logistic,
    }[name]()


def _load_sampler(path: str) -> Any:
    _check_input_file(path, "sampler")
    from latentot import aeot

    try:
        return aeot.load(path)
    except ValueError as e:
        raise CLIError(str(e).splitlines()[0]) from None
    except OSError as e:
        raise CLIError(f"cannot read sampler {path!r}: {e.strerror or e}") from None


def _os_error(e: OSError) -> str:
    """One line for a failed read or write, naming the file (the destination, not a temp file)."""
    name = e.filename
    if isinstance(name, str):
        base = os.path.basename(name)
        if base.startswith(".") and base.endswith(".tmp") and base.count(".") >= 3:
            # write_bytes_atomic's temporary ".<name>.<random>.tmp": report <name>
            name = os.path.join(os.path.dirname(name), base[1:].rsplit(".", 2)[0])
    reason = e.strerror or str(e) or type(e).__name__
    return f"{reason}: {name!r}" if name else reason


def _write(what: str, path: str, write: Callable[[], None]) -> None:
    """Runs ``write``; a failure becomes one line naming ``what`` and ``path``."""
    try:
        write()
    except OSError as e:
        raise CLIError(f"cannot write {what} {path!r}: {e.strerror or e}") from None


def _fit_defaults() -> dict[str, Any]:
    """``aeot.fit``'s keyword defaults, read from its signature (the one source of truth)."""
    import inspect

    from latentot import aeot

    params = inspect.signature(aeot.fit).parameters.values()
    return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}


class _FitDefault:
    """An option's default: "use aeot.fit's". ``str()`` (for ``--help``) reads its value."""

    def __init__(self, name: str, template: str = "{}"):
        self.name, self.template = name, template

    def __str__(self) -> str:
        return self.template.format(_fit_defaults()[self.name])


class _MethodDefault(_FitDefault):
    """An option whose default depends on the training method (``aeot.train.METHOD_DEFAULTS``)."""

    def __str__(self) -> str:
        from latentot.aeot.train import METHOD_DEFAULTS

        return self.template.format(
            ", ".join(f"{v[self.name]} with --method {k}" for k, v in METHOD_DEFAULTS.items())
        )


# --------------------------------------------------------------------------------------------
# Subcommands.


def _cmd_demo(args: argparse.Namespace) -> int:
    _check_output_dir(args.out)
    with _Heartbeat(quiet=args.quiet, tty=_progress()) as beat:
        from latentot.digits import demo

        report = demo.run_demo(
            args.out,
            seed=args.seed,
            seeds=args.seeds if args.seeds is not None else (2 if args.fast else 3),
            fast=args.fast,
            progress=_progress() and not args.quiet,
            log=beat.say,
            command=args.command_line,
        )
    for name in ("liu", "liu_wide", "agustsson"):
        print(report["tables"][name]["title"])
        for row, values in report["tables"][name]["rows"].items():
            m, s = values["mean"], values["std"]
            print(
                f"  {row:40s} IS {m['inception_score']:5.2f} ± {s['inception_score']:4.2f}"
                f"  FD {m['frechet_distance']:7.2f} ± {s['frechet_distance']:5.2f}"
                f"  coverage {m['coverage']:4.2f}"
            )
    print(f"report: {os.path.join(args.out, 'report.md')}")
    return 0


def _cmd_fit(args: argparse.Namespace) -> int:
    if args.resume and not args.checkpoint:
        raise CLIError("--resume needs --checkpoint PATH (the training checkpoint to continue)")
    codes = load_codes(args.codes, key=args.key)
    _check_output_file(args.out, "--out")
    if args.checkpoint:
        if args.resume:
            _check_input_file(args.checkpoint, "--checkpoint")
        _check_output_file(args.checkpoint, "--checkpoint")
        if os.path.abspath(args.checkpoint) == os.path.abspath(args.out):
            raise CLIError("--checkpoint and --out must be different files")
    n = codes.shape[0]

    import jax

    from latentot import aeot
    from latentot.aeot.train import METHOD_DEFAULTS

    defaults = _fit_defaults()
    if isinstance(args.batch_size, _FitDefault):
        method = defaults["method"] if isinstance(args.method, _FitDefault) else args.method
        method = aeot.resolve_method(method, codes.shape[1], prior=_make_prior(args.prior))
        # "pursuit" trains its block with the debiased method
        base = "debiased" if method == "pursuit" else method
        batch_size = min(METHOD_DEFAULTS[base]["batch_size"], n)
    else:
        batch_size = args.batch_size
    if batch_size > n:
        raise CLIError(f"--batch-size {batch_size} exceeds the number of codes ({n})")
    if codes.dtype.name == "float64" and not jax.config.jax_enable_x64:
        codes = codes.astype("float32")
    kwargs = {
        name: value
        for name, value in (
            ("steps", args.steps),
            ("method", args.method),
            ("learning_rate", args.learning_rate),
            ("lam", args.lam),
            ("penalty", args.penalty),
        )
        if not isinstance(value, _FitDefault)
    }
    steps = int(kwargs.get("steps", defaults["steps"]))
    # A line (and a host sync) at least every 10% of the steps.
    kwargs["log_every"] = max(1, min(int(defaults["log_every"]), -(-steps // 10)))
    if args.checkpoint:
        kwargs["checkpoint_path"] = args.checkpoint
        if args.resume:
            kwargs["resume_from"] = args.checkpoint
    if args.quiet:
        mode = "off"
    else:
        mode = "bar" if _progress() else "log"
    beat = _Heartbeat(quiet=args.quiet, tty=_progress())
    progress = aeot.FitProgress(steps, mode=mode, write=beat.say)
    kwargs["callback"] = progress
    try:
        with beat:
            beat.say(
                f"fitting AE-OT on {n} codes of dimension {codes.shape[1]} "
                f"({steps} steps, batch {batch_size}, {args.prior} prior"
                + (f", resuming from {args.checkpoint}" if args.resume else "")
                + ")"
            )
            sampler = aeot.fit(
                jax.random.key(args.seed),
                codes,
                prior=_make_prior(args.prior),
                batch_size=batch_size,
                **kwargs,
            )
    except aeot.TrainingDivergedError as e:
        raise CLIError(str(e)) from None
    except ValueError as e:  # invalid hyperparameters or a checkpoint that does not match
        raise CLIError(str(e).splitlines()[0]) from None
    except OSError as e:  # a checkpoint that cannot be written or read
        raise CLIError(f"{_os_error(e)} (--checkpoint)") from None
    except KeyboardInterrupt:
        if args.checkpoint and os.path.exists(args.checkpoint):
            raise KeyboardInterrupt(
                f"the last training checkpoint is {args.checkpoint!r}: add --resume to continue"
            ) from None
        raise
    finally:
        progress.close()
    _save_sampler(args, sampler)
    h = sampler.history
    notes = []
    if h and len(h.get("loss", ())):
        notes.append(f"final loss {float(h['loss'][-1]):.4g}")
    if h and "transport_gap" in h:
        notes.append(
            f"transport gap {float(h['transport_gap'][0]):.4f}, "
            f"{100 * float(h['transport_gap_reassigned'][0]):.1f}% reassigned "
            "(0 for an optimal map)"
        )
    print(f"saved AE-OT sampler to {args.out} ({'; '.join(notes)})")
    return 0


def _save_sampler(args: argparse.Namespace, sampler: Any) -> None:
    """Saves the trained sampler to --out; if that fails, says where the result still is.

    With --checkpoint, the last training checkpoint holds the trained sampler (``latentot
    sample`` and ``aeot.load`` read it). Without, the sampler is saved to a fallback file in the
    current directory, or else in the temporary directory, and the message names it.
    """
    import tempfile

    from latentot import aeot

    try:
        aeot.save(args.out, sampler)
        return
    except OSError as e:
        failure = f"cannot write --out {args.out!r}: {e.strerror or e}"
    if args.checkpoint and os.path.exists(args.checkpoint):
        raise CLIError(
            f"{failure}; the trained sampler is in the checkpoint {args.checkpoint!r} "
            "(`latentot sample` reads it; copy it where you want it)"
        )
    name = f"latentot-fit-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.aeot"
    for directory in dict.fromkeys((os.getcwd(), tempfile.gettempdir())):
        fallback = os.path.join(directory, name)
        try:
            aeot.save(fallback, sampler)
        except OSError:
            continue
        raise CLIError(f"{failure}; the trained sampler was saved to {fallback!r} instead")
    raise CLIError(
        f"{failure}, nor in {os.getcwd()!r} or {tempfile.gettempdir()!r}; the trained sampler "
        "is lost: free some space and rerun with --checkpoint PATH to keep training checkpoints"
    )


def _cmd_sample(args: argparse.Namespace) -> int:
    _check_output_file(args.out, "--out")
    sampler = _load_sampler(args.sampler)

    import jax
    import numpy as np

    from latentot import _io

    key = jax.random.key(args.seed)
    chunks = []
    done = 0
    chunk = 65_536
    bar = None
    if _progress() and not args.quiet and args.n > chunk:
        from tqdm.auto import tqdm

        bar = tqdm(total=args.n, desc="sampling", leave=False)
    sample = jax.jit(sampler.sample, static_argnums=1)
    while done < args.n:
        m = min(chunk, args.n - done)
        chunks.append(np.asarray(sample(jax.random.fold_in(key, done // chunk), m)))
        done += m
        if bar is not None:
            bar.update(m)
    if bar is not None:
        bar.close()
    samples = np.concatenate(chunks)
    _write("--out", args.out, lambda: _io.save_npy(args.out, samples))
    print(f"wrote {samples.shape[0]} samples of dimension {samples.shape[1]} to {args.out}")
    return 0


def _parse_pairs(text: str) -> list[tuple[int, int]]:
    """``"0:5,3:7"`` → ``[(0, 5), (3, 7)]`` (row indices of the codes)."""
    pairs = []
    for item in text.split(","):
        parts = item.strip().split(":")
        try:
            i, j = (int(p) for p in parts)
        except ValueError:
            raise CLIError(
                f"--pairs must be row pairs like 0:5,3:7, got {item.strip()!r} in {text!r}"
            ) from None
        pairs.append((i, j))
    return pairs


def _cmd_interpolate(args: argparse.Namespace) -> int:
    pairs = _parse_pairs(args.pairs)
    codes = load_codes(args.codes, key=args.key)
    n, d = codes.shape
    bad = [f"{i}:{j}" for i, j in pairs if not (0 <= i < n and 0 <= j < n)]
    if bad:
        raise CLIError(f"--pairs {bad[0]} is out of range: the codes have {n} rows (0 to {n - 1})")
    _check_output_file(args.out, "--out")
    sampler = _load_sampler(args.sampler)
    if sampler.dim != d:
        raise CLIError(f"the codes have dimension {d}, the sampler {sampler.dim}")

    import jax
    import jax.numpy as jnp
    import numpy as np

    from latentot import _io, matching

    rows = np.asarray(pairs, np.int64)  # [P, 2]
    ends = jnp.asarray(codes[rows.T.ravel()].astype(np.float32)).reshape(2, len(pairs), d)
    _, info = sampler.inverse_transport(ends, return_info=True)
    failed = ~np.asarray(info.converged).ravel()
    if failed.any() and not args.allow_unconverged:
        worst = float(np.max(np.asarray(info.residual)))
        first = int(rows.T.ravel()[np.flatnonzero(failed)[0]])
        raise CLIError(
            f"{int(failed.sum())} of the {failed.size} endpoint codes (first: row {first}) have no "
            f"preimage under the sampler within the tolerance (worst round-trip error "
            f"{worst:.3g} > {float(info.tolerance):.3g}); the paths would not start and end at "
            "them: pass --allow-unconverged to write them anyway"
        )
    t = jnp.linspace(0.0, 1.0, args.steps, dtype=jnp.float32)

    @jax.jit
    def paths(sampler, ends, t):  # [steps, P, d]
        return jax.vmap(lambda s: matching.matched_lerp(sampler, ends[0], ends[1], s))(t)

    out = np.swapaxes(np.asarray(paths(sampler, ends, t)), 0, 1)  # [P, steps, d]
    if not np.all(np.isfinite(out)):
        raise CLIError("the matched paths are not finite (a corrupt sampler?)")
    _write("--out", args.out, lambda: _io.save_npy(args.out, out))
    note = f" ({int(failed.sum())} endpoints off by up to {float(np.max(info.residual)):.3g})"
    print(
        f"wrote {out.shape[0]} matched paths of {out.shape[1]} codes of dimension {d} to "
        f"{args.out}" + (note if failed.any() else "")
    )
    return 0


def _cmd_mismatch(args: argparse.Namespace) -> int:
    _check_output_dir(args.out)
    import json

    import jax
    import numpy as np

    from latentot import _io, diagnostics

    prior = _make_prior(args.prior)
    k_report, k_fig = jax.random.split(jax.random.key(args.seed))
    report = diagnostics.mismatch_report(k_report, prior, args.dim, args.n, t=args.t)
    print(report.format())
    data = diagnostics.fig2_data(k_fig, prior, dim=args.dim, n=args.n, t=args.t)
    data = {k: np.asarray(v) for k, v in data.items()}
    title = f"{type(prior).__name__} prior, d = {args.dim}, t = {args.t:g}"
    fig = diagnostics.plot_fig2({title: data})
    stem = f"mismatch_{args.prior}_d{args.dim}"
    png = os.path.join(args.out, stem + ".png")
    _write("the figure", png, lambda: _io.save_figure(fig, png))
    payload = json.dumps(report.as_dict(), indent=2, allow_nan=True) + "\n"
    path = os.path.join(args.out, stem + ".json")
    _write("the statistics", path, lambda: _io.write_bytes_atomic(path, payload.encode()))
    print(f"wrote {png} and {stem}.json")
    return 0


# --------------------------------------------------------------------------------------------
# Parser and entry point.


class _VersionAction(argparse.Action):
    """``--version``: ``latentot.__version__`` (the installed package's metadata)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        from latentot import __version__

        print(f"latentot {__version__}")
        parser.exit()


class _Lazy:
    """A value of ``--help`` text computed when the help is printed (``str()`` calls ``text``),
    so that building the parser imports nothing heavy."""

    def __init__(self, text: Callable[[], str]):
        self.text = text

    def __str__(self) -> str:
        return self.text()


def _auto_rule() -> str:
    """What ``--method auto`` picks, read from the library's thresholds."""
    from latentot.aeot.train import AUTO_MINIBATCH_MAX_DIM, AUTO_PURSUIT_MIN_DIM

    return (
        f"minibatch for codes of dimension <= {AUTO_MINIBATCH_MAX_DIM}, debiased up to "
        f"{AUTO_PURSUIT_MIN_DIM - 1}, pursuit from {AUTO_PURSUIT_MIN_DIM} with the gaussian "
        "prior, else debiased"
    )


def _command(sub, name: str, func: Callable, *, summary: str, description: str):
    """A subcommand's parser, running ``func(args)``."""
    p = sub.add_parser(name, help=summary, description=description)
    p.set_defaults(func=func)
    return p


def _add_seed(p: argparse.ArgumentParser, what: str = "PRNG seed", *, quiet: bool = True) -> None:
    """``--seed``, and ``--quiet`` for the commands that report progress."""
    p.add_argument("--seed", type=int, default=0, help=f"{what} (default: %(default)s)")
    if quiet:
        p.add_argument(
            "-q", "--quiet", action="store_true", help="no progress output (results still print)"
        )


def _add_codes(p: argparse.ArgumentParser, flag: str, **options: Any) -> None:
    """The codes (``flag``: a positional or ``--codes``) and ``--key`` for ``.npz`` archives."""
    p.add_argument(flag, metavar="CODES", **options)
    p.add_argument("--key", help="name of the array in a .npz archive")


def _fit_option(p, flag: str, convert: Callable, what: str, default: Any = None) -> None:
    """An ``aeot.fit`` hyperparameter; its default (shown by ``--help``) is ``aeot.fit``'s."""
    default = _FitDefault(flag[2:].replace("-", "_")) if default is None else default
    p.add_argument(flag, type=convert, default=default, help=f"{what} (default: %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``latentot`` command."""
    parser = argparse.ArgumentParser(
        prog="latentot",
        description=(
            "Optimal transport on the latent spaces of generative models: matched latent "
            "operators (Agustsson et al.), Cauchy interpolation (Leśniak et al.) and the AE-OT "
            "sampler (Liu et al.)."
        ),
    )
    parser.add_argument("--version", action=_VersionAction, help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = _command(
        sub,
        "demo",
        _cmd_demo,
        summary="the end-to-end digits pipeline: models, AE-OT, both tables, figures, report",
        description=(
            "Trains digits models (autoencoder, VAE, two WGAN-GP generators, a scoring "
            "classifier), fits AE-OT on the autoencoder's codes, measures the Liu et al. "
            "Table 1 and Agustsson et al. Table 2 analogues over several seeds and writes PNG "
            "figures plus report.md and report.json. The defaults take about 10 CPU minutes on 2 "
            "cores; --fast about 2 minutes (poor models: for tests)."
        ),
    )
    p.add_argument("--out", default="latentot-demo", help="output directory (default: %(default)s)")
    p.add_argument("--fast", action="store_true", help="tiny budgets, poor models (for tests)")
    p.add_argument(
        "--seeds", type=_positive_int, help="seeds per table (default: 3, or 2 with --fast)"
    )
    _add_seed(p, "base seed")

    p = _command(
        sub,
        "fit",
        _cmd_fit,
        summary="fit an AE-OT sampler on your latent codes",
        description=(
            "Fits an AE-OT sampler (latentot.aeot.fit) on latent codes [N, d] read from a .npy "
            "file, or from a .npz archive (its single array, or the one named by --key), and "
            "saves it with latentot.aeot.save. The defaults shown are aeot.fit's. With "
            "--checkpoint, training checkpoints are written while it runs; after an "
            "interruption, the same command with --resume continues where it stopped and "
            "gives the same sampler as an uninterrupted run."
        ),
    )
    _add_codes(p, "codes", help="latent codes: .npy, or .npz with --key")
    p.add_argument("--out", required=True, metavar="SAMPLER", help="where to save the sampler")
    _fit_option(p, "--steps", _positive_int, "training steps, in total")
    batch = _MethodDefault("batch_size", "min(N, {})")
    _fit_option(
        p, "--batch-size", _positive_int, "batch LP size: noise and code points per step", batch
    )
    method = p.add_argument(
        "--method",
        choices=("auto", "debiased", "minibatch", "pursuit"),
        default=_FitDefault("method"),
        help="training targets: debiased minibatch OT, Liu et al.'s Algorithm 1, pursuit: the "
        "debiased method on the codes' non-Gaussian block and Gaussianisation layers elsewhere, "
        "see docs/pursuit.md; or auto: %(auto)s (default: %(default)s)",
    )
    method.auto = _Lazy(_auto_rule)  # argparse fills %(auto)s from the action's attributes
    _fit_option(p, "--learning-rate", _positive_float, "initial Adam learning rate")
    lam = "weight λ of the gradient penalty against the value term, --method minibatch only"
    _fit_option(p, "--lam", _non_negative_float, lam)
    p.add_argument(
        "--penalty",
        choices=("vector", "norm", "vector_l1"),
        default=_MethodDefault("penalty"),
        help="gradient penalty kind (default: %(default)s)",
    )
    p.add_argument(
        "--prior", choices=PRIORS, default="gaussian", help="noise prior (default: %(default)s)"
    )
    p.add_argument(
        "--checkpoint",
        metavar="PATH",
        help="write training checkpoints to PATH while training (default: none)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run saved in --checkpoint PATH (same command otherwise)",
    )
    _add_seed(p)

    p = _command(
        sub,
        "sample",
        _cmd_sample,
        summary="draw samples from a saved AE-OT sampler",
        description=(
            "Draws N latent samples T(z), z ~ prior, from a sampler saved by `latentot fit` "
            "(or from its training checkpoint)."
        ),
    )
    p.add_argument("sampler", metavar="SAMPLER", help="a sampler file written by `latentot fit`")
    p.add_argument("-n", type=_positive_int, required=True, help="number of samples")
    p.add_argument("--out", required=True, metavar="X.npy", help="output .npy file [n, d]")
    _add_seed(p)

    p = _command(
        sub,
        "interpolate",
        _cmd_interpolate,
        summary="matched paths between given codes, through a saved AE-OT sampler",
        description=(
            "Interpolates between pairs of codes so that every frame keeps the codes' law: "
            "T(matched_lerp(prior, T⁻¹(y₀), T⁻¹(y₁), t)) with T the sampler's map, for t "
            "evenly spaced in [0, 1]. Writes the paths as .npy [pairs, steps, d]: path p starts "
            "at code i and ends at code j of its pair i:j (up to the round-trip error of T⁻¹). "
            "Endpoints without a preimage under the sampler are an error unless "
            "--allow-unconverged."
        ),
    )
    p.add_argument("--sampler", required=True, metavar="SAMPLER", help="a saved AE-OT sampler")
    _add_codes(p, "--codes", required=True, help="codes [N, d]: .npy, or .npz with --key")
    p.add_argument(
        "--pairs", required=True, metavar="I:J,...", help="row pairs of the codes, e.g. 0:5,3:7"
    )
    p.add_argument(
        "--steps",
        type=_argument(int, lambda v: v >= 2, "an integer >= 2"),
        default=9,
        help="codes per path, both ends included (default: %(default)s)",
    )
    p.add_argument("--out", required=True, metavar="PATHS.npy", help="output .npy [P, steps, d]")
    p.add_argument(
        "--allow-unconverged",
        action="store_true",
        help="write the paths even where an endpoint has no preimage within the tolerance",
    )

    p = _command(
        sub,
        "mismatch",
        _cmd_mismatch,
        summary="KS and norm statistics of linear / SLERP / matched midpoints for a prior",
        description=(
            "Prints the KS distance of the components and the norm statistics of prior "
            "samples and of linear, SLERP and matched interpolants of independent pairs, and "
            "writes the squared-norm histogram (Agustsson et al. Fig. 2 for any prior) and the "
            "statistics as JSON."
        ),
    )
    p.add_argument("--prior", choices=PRIORS, required=True, help="the latent prior")
    p.add_argument("--dim", type=_positive_int, required=True, help="latent dimension d")
    p.add_argument(
        "-n", type=_positive_int, default=20_000, help="number of pairs (default: %(default)s)"
    )
    p.add_argument(
        "--t", type=_unit_interval, default=0.5, help="interpolation t (default: %(default)s)"
    )
    p.add_argument(
        "--out", default="latentot-mismatch", help="output directory (default: %(default)s)"
    )
    _add_seed(p, quiet=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the ``latentot`` command; returns the exit status.

    Args:
        argv: the arguments (default ``sys.argv[1:]``).

    Returns:
        0 on success, 2 on a user error or a failed read or write (one line on stderr), 130 on
        Ctrl-C.
    """
    import shlex

    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.command_line = shlex.join(["latentot", *argv])
    try:
        return args.func(args)
    except CLIError as e:
        print(f"latentot: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:  # a write (or read) that failed after the checks: full disk, ...
        print(f"latentot: error: {_os_error(e)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as e:
        print(f"latentot: interrupted{f'; {e}' if str(e) else ''}", file=sys.stderr)
        return 130
