"""The ``latentot`` command line: ``demo``, ``fit``, ``sample`` and ``mismatch``.

Heavy imports (jax, flax, the models) happen inside the subcommands, so ``latentot --help``
answers at once. Bad input (a missing or unreadable file, a corrupt or foreign sampler, codes
with NaN or of the wrong rank, ...) prints one line ``latentot: error: ...`` to stderr and exits
with status 2, without a traceback. Progress bars go to stderr and only appear on a terminal.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["CLIError", "build_parser", "load_codes", "main"]

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


# --------------------------------------------------------------------------------------------
# Subcommands.


def _cmd_demo(args: argparse.Namespace) -> int:
    _check_output_dir(args.out)
    from latentot.digits import demo

    report = demo.run_demo(
        args.out,
        seed=args.seed,
        seeds=args.seeds if args.seeds is not None else (2 if args.fast else 3),
        fast=args.fast,
        progress=_progress(),
        log=_log,
    )
    for name in ("liu", "agustsson"):
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
    codes = load_codes(args.codes, key=args.key)
    _check_output_file(args.out, "--out")
    n = codes.shape[0]
    batch_size = args.batch_size if args.batch_size is not None else min(512, n)
    if batch_size > n:
        raise CLIError(f"--batch-size {batch_size} exceeds the number of codes ({n})")

    import jax

    from latentot import aeot

    if codes.dtype.name == "float64" and not jax.config.jax_enable_x64:
        codes = codes.astype("float32")
    kwargs = {
        k: v
        for k, v in (
            ("steps", args.steps),
            ("learning_rate", args.learning_rate),
            ("lam", args.lam),
            ("penalty", args.penalty),
        )
        if v is not None
    }
    _log(
        f"fitting AE-OT on {n} codes of dimension {codes.shape[1]} "
        f"({args.steps or 'default'} steps, batch {batch_size}, {args.prior} prior)"
    )
    try:
        sampler = aeot.fit(
            jax.random.key(args.seed),
            codes,
            prior=_make_prior(args.prior),
            batch_size=batch_size,
            progress=_progress(),
            **kwargs,
        )
    except aeot.TrainingDivergedError as e:
        raise CLIError(str(e)) from None
    except ValueError as e:  # invalid hyperparameters, reported by aeot.fit before training
        raise CLIError(str(e).splitlines()[0]) from None
    aeot.save(args.out, sampler)
    h = sampler.history
    final = f"final loss {float(h['loss'][-1]):.4g}" if h and len(h.get("loss", ())) else ""
    print(f"saved AE-OT sampler to {args.out} ({final})")
    return 0


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
    if _progress() and args.n > chunk:
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
    _io.save_npy(args.out, samples)
    print(f"wrote {samples.shape[0]} samples of dimension {samples.shape[1]} to {args.out}")
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
    # Heavy tails (Cauchy: E‖z‖² is infinite) would squeeze every histogram into one bin:
    # plot the bulk, up to the 99th percentile of the prior samples' squared norms.
    cap = float(np.quantile(data["prior"], 0.99))
    if any(float(v.max()) > 10 * cap for v in data.values()):
        data = {k: v[v <= cap] for k, v in data.items()}
        title += " (‖y‖² ≤ 99th percentile of the prior's)"
    fig = diagnostics.plot_fig2({title: data})
    stem = f"mismatch_{args.prior}_d{args.dim}"
    png = os.path.join(args.out, stem + ".png")
    _io.save_figure(fig, png)
    payload = json.dumps(report.as_dict(), indent=2, allow_nan=True) + "\n"
    _io.write_bytes_atomic(os.path.join(args.out, stem + ".json"), payload.encode())
    print(f"wrote {png} and {stem}.json")
    return 0


# --------------------------------------------------------------------------------------------
# Parser and entry point.


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
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "demo",
        help="the end-to-end digits pipeline: models, AE-OT, both tables, figures, report",
        description=(
            "Trains digits models (autoencoder, VAE, two WGAN-GP generators, a scoring "
            "classifier), fits AE-OT on the autoencoder's codes, measures the Liu et al. "
            "Table 1 and Agustsson et al. Table 2 analogues over several seeds and writes PNG "
            "figures plus report.md and report.json. The defaults take a few minutes on 2 CPU "
            "cores; --fast takes seconds (poor models: for tests)."
        ),
    )
    p.add_argument("--out", default="latentot-demo", help="output directory (default: %(default)s)")
    p.add_argument("--fast", action="store_true", help="tiny budgets, for tests")
    p.add_argument(
        "--seeds", type=_positive_int, help="seeds per table (default: 3, or 2 with --fast)"
    )
    p.add_argument("--seed", type=int, default=0, help="base seed (default: %(default)s)")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser(
        "fit",
        help="fit an AE-OT sampler on your latent codes",
        description=(
            "Fits an AE-OT sampler (latentot.aeot.fit) on latent codes [N, d] read from a .npy "
            "file, or from a .npz archive (its single array, or the one named by --key), and "
            "saves it with latentot.aeot.save. Unset hyperparameters take aeot.fit's defaults."
        ),
    )
    p.add_argument("codes", metavar="CODES", help="latent codes: .npy, or .npz with --key")
    p.add_argument("--out", required=True, metavar="SAMPLER", help="where to save the sampler")
    p.add_argument("--key", help="name of the array in a .npz archive")
    p.add_argument("--steps", type=_positive_int, help="training steps (default: aeot.fit's)")
    p.add_argument("--batch-size", type=_positive_int, help="batch LP size (default: min(512, N))")
    p.add_argument("--learning-rate", type=_positive_float, help="Adam learning rate")
    p.add_argument("--lam", type=_non_negative_float, help="weight of the gradient penalty")
    p.add_argument("--penalty", choices=("vector", "norm", "vector_l1"), help="penalty kind")
    p.add_argument(
        "--prior", choices=PRIORS, default="gaussian", help="noise prior (default: %(default)s)"
    )
    p.add_argument("--seed", type=int, default=0, help="PRNG seed (default: %(default)s)")
    p.set_defaults(func=_cmd_fit)

    p = sub.add_parser(
        "sample",
        help="draw samples from a saved AE-OT sampler",
        description="Draws N latent samples z + ∇D(z) from a sampler saved by `latentot fit`.",
    )
    p.add_argument("sampler", metavar="SAMPLER", help="a sampler file written by `latentot fit`")
    p.add_argument("-n", type=_positive_int, required=True, help="number of samples")
    p.add_argument("--out", required=True, metavar="X.npy", help="output .npy file [n, d]")
    p.add_argument("--seed", type=int, default=0, help="PRNG seed (default: %(default)s)")
    p.set_defaults(func=_cmd_sample)

    p = sub.add_parser(
        "mismatch",
        help="KS and norm statistics of linear / SLERP / matched midpoints for a prior",
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
    p.add_argument("--seed", type=int, default=0, help="PRNG seed (default: %(default)s)")
    p.set_defaults(func=_cmd_mismatch)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the ``latentot`` command; returns the exit status.

    Args:
        argv: the arguments (default ``sys.argv[1:]``).

    Returns:
        0 on success, 2 on a user error (one line on stderr), 130 on Ctrl-C.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except CLIError as e:
        print(f"latentot: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("latentot: interrupted", file=sys.stderr)
        return 130
