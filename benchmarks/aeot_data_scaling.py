"""AE-OT against the number of codes N: the default sampler's scores, fit time and peak memory.

The claim it checks: more codes never score worse. Each case fits :func:`latentot.aeot.fit`
with library defaults (``method="auto"``: ``"pursuit"`` from d = 33) on nested training sets,
the first N rows of one set built at the largest N, and scores every fit against the same
held-out data:

* ``patches``: grey 8×8 patches of sklearn's two sample photographs (d = 64;
  ``aeot_real_data.load_patches`` with ``n_train`` = the largest N, so the test, ICA and real
  held-out parts, 8192 codes each, are the same for every N; the photographs have 531,720
  positions, so N ≤ 507,144). Scores of 8192 samples by ``aeot_real_data.Scorer`` (its module
  docstring defines them): ICA-KS, radius-KS, C2ST, var-ratio, energy, memorisation. The
  scorer's own training reference (mean, whitening, principal directions, nearest neighbours)
  is the first min(N) training codes, a subset of every N's training set, so that only the
  samples change between the rows. The "real held-out" row is the sampling-noise floor.
* ``bimodal``: the known-map pair ``"bimodal"`` of :mod:`latentot.aeot.known_maps` (key
  ``100 + d``, as in ``aeot_known_maps.py``; d = 256 unless ``--dim``). ``KS`` is
  :func:`~latentot.aeot.known_maps.marginal_ks` along the pair's 4 bimodal directions between
  the map's images of 20,000 fresh N(0, I) draws and 20,000 fresh codes of the pair (the same
  draws for every N; the floor: ≤ 0.05, two samples of the same law measure about 0.009,
  Gaussian marginals 0.14); ``L2-UVP`` on 4096 test points and ``cov`` (the pushed samples'
  covariance error against the fresh codes) as in ``aeot_known_maps.py``. ``linear`` is the
  same scores of the Bures map fitted to the same N codes (:func:`latentot.aeot.bures_map`).

Each fit runs in its own subprocess (as in ``aeot_large_n.py``): it loads its N codes
(float32), reads its resident memory, fits, and reads the peak resident memory (``VmHWM`` of
``/proc/self/status``, Linux); ``growth`` is ``(peak − resident before the fit) /
codes.nbytes``, the host memory of the fit over the codes' own size (at small N the fit's
fixed cost, hundreds of MiB of compiled code and buffers, dominates it: read ``growth MiB``).
On an accelerator the device's peak bytes in use (``memory_stats``) are reported too, and this
process does not preallocate device memory, which it leaves to the fits. Each row also gives
the fit's wall time (the first 8 samples included: compilation counts), the learned block's k
and ``history["layers"]`` (the frame's one-dimensional layers) where the method has them.

Verdict lines, one per case: whether any of ICA-KS, radius-KS, C2ST (``patches``) or KS
(``bimodal``) at a larger N is worse than at a smaller N by more than 0.01, and for
``bimodal`` whether the KS at the largest N is ≤ 0.05. The tolerance is near the scores' own
noise: the C2ST of the same 8192 patch samples moves by 0.011 when the scorer's reference is
10,000 codes instead of 5000 (its classifier sees other whitened inputs), which is why the
reference is fixed.

Run: ``python benchmarks/aeot_data_scaling.py [--cases patches,bimodal] [--sizes N1,N2,...]
[--dim 256] [--steps 1000] [--quick] [--json out.json]`` (``--sizes`` replaces the sizes of
every case; ``--quick``: N = 5000, 10,000 and d = 64 for ``bimodal``, a smoke run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.dirname(os.path.abspath(__file__))

CASES = ("patches", "bimodal")
SIZES = {"patches": (20_000, 100_000, 400_000), "bimodal": (20_000, 65_536, 200_000)}
QUICK_SIZES = (5_000, 10_000)
QUICK_DIM = 64
PATCH_SIZE = 8
HELD_OUT = 8192  # each of the patches' test, ICA and real held-out parts
KS_POINTS = 20_000  # bimodal: pushed draws and fresh codes of the KS and cov
UVP_POINTS = 4096  # bimodal: test points of the L2-UVP
TOLERANCE = 0.01  # a larger N may score worse than a smaller one by at most this
KS_FLOOR = 0.05  # bimodal: the KS that the largest N must reach
VERDICT_SCORES = {"patches": ("ica_ks", "radius_ks", "c2st"), "bimodal": ("ks",)}


def _status_kib(field: str) -> int:
    """A field of ``/proc/self/status`` in KiB (``aeot_large_n.py``'s reader)."""
    if HERE not in sys.path:
        sys.path.insert(0, HERE)
    from aeot_large_n import _status_kib as read

    return read(field)


def worse_pairs(rows: list[dict], keys, tolerance: float = TOLERANCE) -> list[str]:
    """Where a larger N scores worse than a smaller N by more than ``tolerance`` (a NaN score,
    from samples that are not finite, is worse than any number).

    Args:
      rows: one dict per N with ``"n"`` and the scores in ``keys`` (lower is better); rows with
        an ``"error"`` are skipped.
      keys: the scores to compare.
      tolerance: the allowed worsening.

    Returns:
      One line per (score, smaller N, larger N) that worsens, e.g.
      ``"c2st: N = 20000 → 100000: 0.612 → 0.640"``; empty when none does.
    """
    ok = sorted((r for r in rows if "error" not in r), key=lambda r: r["n"])
    out = []
    for key in keys:
        for i, small in enumerate(ok):
            for large in ok[i + 1 :]:
                a, b = small[key], large[key]
                if large["n"] > small["n"] and (b > a + tolerance or (b != b and a == a)):
                    out.append(
                        f"{key}: N = {small['n']} → {large['n']}: "
                        f"{small[key]:.3f} → {large[key]:.3f}"
                    )
    return out


# --------------------------------------------------------------------------------------------
# The worker: one fit in its own process


def _worker(workdir: str, steps: int | None, n_samples: int, seed: int) -> dict:
    """Fits the codes of ``workdir/codes.npy``; writes ``samples.npy`` (``n_samples`` draws)
    and, where ``workdir/noise.npy`` exists, ``pushed.npy`` (the map's images of that noise)."""
    import jax
    import numpy as np

    from latentot import aeot

    codes = np.load(os.path.join(workdir, "codes.npy"))
    before = _status_kib("VmRSS")
    t = time.perf_counter()
    kwargs = {} if steps is None else {"steps": steps}
    sampler = aeot.fit(jax.random.key(seed), codes, **kwargs)
    jax.block_until_ready(sampler.sample(jax.random.key(seed + 1), 8))
    wall = time.perf_counter() - t
    peak = _status_kib("VmHWM")
    stats = jax.local_devices()[0].memory_stats() or {}
    samples = np.asarray(sampler.sample(jax.random.key(seed + 2), n_samples))
    np.save(os.path.join(workdir, "samples.npy"), samples)
    noise_path = os.path.join(workdir, "noise.npy")
    if os.path.exists(noise_path):
        noise = np.load(noise_path)
        pushed = [
            np.asarray(sampler.transport(jax.numpy.asarray(noise[i : i + 8192])))
            for i in range(0, len(noise), 8192)
        ]
        np.save(os.path.join(workdir, "pushed.npy"), np.concatenate(pushed))
    history = sampler.history or {}
    layers = history.get("layers")
    return {
        "n": int(codes.shape[0]),
        "dim": int(codes.shape[1]),
        "method": aeot.resolve_method("auto", int(codes.shape[1])),
        "k": int(sampler.k),
        "layers": None if layers is None else int(np.asarray(layers)[-1]),
        "fit_s": wall,
        "codes_mib": codes.nbytes / 2**20,
        "growth_mib": (peak - before) / 1024,
        "growth_x_codes": (peak - before) * 1024 / codes.nbytes,
        "device_peak_mib": (
            stats["peak_bytes_in_use"] / 2**20 if "peak_bytes_in_use" in stats else None
        ),
    }


def _fit_in_subprocess(codes, args, env, noise=None) -> dict:
    """Runs :func:`_worker` on ``codes`` ``[N, d]`` in a fresh process; returns its result dict
    with ``"samples"`` (and ``"pushed"`` when ``noise`` is given), or ``{"error": ...}``."""
    import numpy as np

    with tempfile.TemporaryDirectory(prefix="aeot_data_scaling_") as workdir:
        np.save(os.path.join(workdir, "codes.npy"), np.asarray(codes, np.float32))
        if noise is not None:
            np.save(os.path.join(workdir, "noise.npy"), np.asarray(noise, np.float32))
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", workdir]
        cmd += ["--samples", str(args.samples), "--seed", str(args.seed)]
        if args.steps is not None:
            cmd += ["--steps", str(args.steps)]
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if out.returncode:
            lines = (out.stderr.strip() or f"exit status {out.returncode}").splitlines()
            return {"n": len(codes), "error": f"failed: {lines[-1]}"}
        result = json.loads(out.stdout.strip().splitlines()[-1])
        result["samples"] = np.load(os.path.join(workdir, "samples.npy"))
        if noise is not None:
            result["pushed"] = np.load(os.path.join(workdir, "pushed.npy"))
    return result


# --------------------------------------------------------------------------------------------
# The cases


def _fmt(v, spec=".3f") -> str:
    return "–" if v is None else format(v, spec)


def _fit_cells(r: dict) -> list[str]:
    return [
        str(r["n"]),
        f"{r['fit_s']:.1f}",
        str(r["k"]),
        _fmt(r["layers"], "d"),
        f"{r['growth_mib']:.0f}",
        f"{r['growth_x_codes']:.2f}",
        _fmt(r["device_peak_mib"], ".0f"),
    ]


def _table(head: list[str], lines: list[list[str]]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(cells) + " |" for cells in lines]
    return "\n".join(out)


def patch_positions(size: int = PATCH_SIZE) -> int:
    """The number of ``size``×``size`` patch positions in sklearn's two sample photographs."""
    from sklearn.datasets import load_sample_images

    return sum(
        (h - size + 1) * (w - size + 1)
        for h, w, _ in (im.shape for im in load_sample_images().images)
    )


def run_patches(sizes, args, env, log=print) -> dict:
    """The ``patches`` case: fits and scores at every N of ``sizes``; returns its results."""
    if HERE not in sys.path:
        sys.path.insert(0, HERE)
    import aeot_real_data as rd

    t0 = time.perf_counter()
    n_max, n_ref = max(sizes), min(sizes)
    case = rd.load_patches(PATCH_SIZE, n_train=n_max, seed=args.seed)
    scorer = rd.Scorer(case.train[:n_ref], case.test, case.ica, seed=args.seed)
    floor = scorer(case.floor)
    log(
        f"## patches (d = {case.dim}): {case.note}; scorer reference: the first {n_ref} "
        f"training codes; data + scorer {time.perf_counter() - t0:.1f} s"
    )
    rows = []
    for n in sizes:
        r = _fit_in_subprocess(case.train[:n], args, env)
        if "error" not in r:
            r |= scorer(r.pop("samples"))
        rows.append(r)
        log(
            "  " + json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()})
        )
    head = ["N", "fit s", "k", "layers", "growth MiB", "× codes", "device peak MiB", "ICA-KS"]
    head += ["radius-KS", "C2ST", "var-ratio", "energy", "memo"]
    lines = []
    for r in rows:
        if "error" in r:
            lines.append([str(r["n"]), r["error"]] + [""] * (len(head) - 2))
            continue
        lines.append(
            _fit_cells(r)
            + [f"{r[k]:.3f}" for k in ("ica_ks", "radius_ks", "c2st")]
            + [f"{r['var_ratio']:.3g}", f"{r['energy']:.4f}", f"{r['memorisation']:.3g}"]
        )
    lines.append(
        ["real held-out", "", "", "", "", "", ""]
        + [f"{floor[k]:.3f}" for k in ("ica_ks", "radius_ks", "c2st")]
        + [f"{floor['var_ratio']:.3g}", f"{floor['energy']:.4f}", f"{floor['memorisation']:.3g}"]
    )
    log("\n" + _table(head, lines) + "\n")
    bad = worse_pairs(rows, VERDICT_SCORES["patches"])
    failed = [r["n"] for r in rows if "error" in r]
    verdict = (
        f"verdict patches: more codes never score worse by more than {TOLERANCE} "
        f"(ICA-KS, radius-KS, C2ST): " + ("yes" if not bad else "NO: " + "; ".join(bad))
    )
    if failed:
        verdict += f" (failed fits: N = {failed})"
    log(verdict)
    return {
        "note": case.note,
        "dim": case.dim,
        "reference_n": n_ref,
        "rows": rows,
        "real_held_out": floor,
        "worse": bad,
        "verdict": verdict,
    }


def run_bimodal(sizes, dim, args, env, log=print) -> dict:
    """The ``bimodal`` case at dimension ``dim``; returns its results."""
    import jax
    import numpy as np

    from latentot import Gaussian, aeot
    from latentot.aeot import known_maps as km

    t0 = time.perf_counter()
    n_max = max(sizes)
    pair = km.known_map(jax.random.key(100 + dim), "bimodal", dim)
    codes = np.concatenate(
        [
            np.asarray(pair.sample(jax.random.key(1 + i), min(100_000, n_max - i))[1])
            for i in range(0, n_max, 100_000)
        ]
    )
    x_test, y_test = (np.asarray(a) for a in pair.sample(jax.random.key(2), UVP_POINTS))
    fresh = np.asarray(pair.sample(jax.random.key(3), KS_POINTS)[1])
    z = np.asarray(jax.random.normal(jax.random.key(4), (KS_POINTS, dim), np.float32))
    u = km.bimodal_directions(pair)
    noise = np.concatenate([z, x_test])
    log(
        f"## bimodal (d = {dim}): {n_max} codes of the known-map pair, {len(u)} bimodal "
        f"directions; data {time.perf_counter() - t0:.1f} s"
    )

    def scores(pushed, train):
        p_z, p_x = pushed[:KS_POINTS], pushed[KS_POINTS:]
        return {
            "ks": km.marginal_ks(p_z, fresh, u),
            "l2_uvp": km.l2_uvp(p_x, y_test, train),
            "cov": km.covariance_error(p_z, fresh),
        }

    rows = []
    for n in sizes:
        r = _fit_in_subprocess(codes[:n], args, env, noise=noise)
        if "error" not in r:
            r.pop("samples")
            r |= scores(r.pop("pushed"), codes[:n])
            a, b = (np.asarray(v, np.float64) for v in aeot.bures_map(codes[:n], Gaussian()))
            r |= {f"{k}_linear": v for k, v in scores(noise @ a + b, codes[:n]).items()}
        rows.append(r)
        log(
            "  " + json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()})
        )
    head = ["N", "fit s", "k", "layers", "growth MiB", "× codes", "device peak MiB", "KS", "L2-UVP"]
    head += ["cov", "KS linear", "L2-UVP linear", "cov linear"]
    lines = []
    for r in rows:
        if "error" in r:
            lines.append([str(r["n"]), r["error"]] + [""] * (len(head) - 2))
            continue
        cells = []
        for suffix in ("", "_linear"):
            cells += [f"{r['ks' + suffix]:.3f}", f"{r['l2_uvp' + suffix]:.2f}"]
            cells.append(f"{100 * r['cov' + suffix]:.1f}%")
        lines.append(_fit_cells(r) + cells)
    log("\n" + _table(head, lines) + "\n")
    bad = worse_pairs(rows, VERDICT_SCORES["bimodal"])
    largest = max(rows, key=lambda r: r["n"])
    if "error" in largest:
        floor_line = f"KS at N = {largest['n']}: the fit failed"
    else:
        ok = "yes" if largest["ks"] <= KS_FLOOR else "NO"
        floor_line = f"KS at N = {largest['n']} is {largest['ks']:.3f} <= {KS_FLOOR}: {ok}"
    verdict = (
        f"verdict bimodal d={dim}: {floor_line}; more codes never score worse by more than "
        f"{TOLERANCE}: " + ("yes" if not bad else "NO: " + "; ".join(bad))
    )
    log(verdict)
    return {"dim": dim, "directions": len(u), "rows": rows, "worse": bad, "verdict": verdict}


# --------------------------------------------------------------------------------------------
# Driver


def _sizes(text: str) -> tuple[int, ...]:
    sizes = tuple(int(v) for v in text.split(","))
    if not sizes or min(sizes) < 1 or len(set(sizes)) != len(sizes):
        raise ValueError(f"--sizes must be distinct positive integers, got {text!r}")
    return tuple(sorted(sizes))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--sizes", default=None, help="N1,N2,... for every case")
    parser.add_argument("--dim", type=int, default=None, help="bimodal's d (256; --quick: 64)")
    parser.add_argument("--steps", type=int, default=None, help="aeot.fit steps (its default)")
    parser.add_argument("--quick", action="store_true", help="N = 5000, 10000; bimodal d = 64")
    parser.add_argument("--samples", type=int, default=8192, help="samples scored per fit")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="write the results to this JSON file")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(args.worker, args.steps, args.samples, args.seed)))
        return {}
    cases = args.cases.split(",")
    for c in cases:
        if c not in CASES:
            parser.error(f"unknown case {c!r}; choose from {CASES}")
    try:
        given = None if args.sizes is None else _sizes(args.sizes)
    except ValueError as err:
        parser.error(str(err))
    sizes = {c: given or (QUICK_SIZES if args.quick else SIZES[c]) for c in cases}
    dim = args.dim or (QUICK_DIM if args.quick else 256)
    if "patches" in cases:
        most = patch_positions() - 3 * HELD_OUT
        if max(sizes["patches"]) > most:
            parser.error(f"patches: at most {most} training codes, got {max(sizes['patches'])}")

    # The fits get the environment as it is; this process (data, scores) allocates device
    # memory as it needs it, so that it leaves the device to the fits.
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    import jax

    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    device = jax.devices()[0]
    print(
        f"{stamp} · {platform.processor() or platform.machine()}, {os.cpu_count()} cores · "
        f"{device.platform} ({device.device_kind}) · jax {jax.__version__} · steps "
        f"{args.steps or 'default'}"
    )
    meta = {
        "date": stamp,
        "machine": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "device": f"{device.platform} ({device.device_kind})",
        "jax": jax.__version__,
        "argv": sys.argv[1:] if argv is None else list(argv),
        "sizes": sizes,
        "steps": args.steps,
    }
    results = {}
    for c in cases:
        if c == "patches":
            results[c] = run_patches(sizes[c], args, env)
        else:
            results[c] = run_bimodal(sizes[c], dim, args, env)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"meta": meta, "cases": results}, f, indent=2, default=_jsonable)
    return results


def _jsonable(v):
    if hasattr(v, "tolist"):
        return v.tolist()
    raise TypeError(f"not JSON serialisable: {type(v)}")


if __name__ == "__main__":
    main()
