"""AE-OT on 10⁶ codes: fit time and the peak memory growth over the codes' own size.

Each method runs in its own subprocess, which makes N codes of the known-map pair ``subspace``
(``latentot.aeot.known_maps``) in float32, reads its resident memory, fits ``aeot.fit`` with
``steps`` steps, and reads the peak resident memory (``VmHWM`` of ``/proc/self/status``, Linux).
The growth is ``(peak − resident before the fit) / codes.nbytes``; nothing in the fit may be
N × N, and the bound is 2×.

Run: ``python benchmarks/aeot_large_n.py [--n 1000000] [--dim 256] [--steps 200]
[--methods pursuit,debiased]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _worker(args) -> dict:
    import jax
    import numpy as np

    from latentot import aeot
    from latentot.aeot import known_maps as km

    pair = km.known_map(jax.random.key(0), "subspace", args.dim)
    chunks = []
    for i in range(0, args.n, 100_000):
        _, y = pair.sample(jax.random.key(1 + i), min(100_000, args.n - i))
        chunks.append(np.asarray(y))
    codes = np.concatenate(chunks)
    del chunks
    before = _status_kib("VmRSS")
    t = time.perf_counter()
    sampler = aeot.fit(jax.random.key(2), codes, method=args.method, steps=args.steps)
    jax.block_until_ready(sampler.sample(jax.random.key(3), 8))
    wall = time.perf_counter() - t
    peak = _status_kib("VmHWM")
    return {
        "method": args.method,
        "n": args.n,
        "dim": args.dim,
        "steps": args.steps,
        "k": sampler.k,
        "fit_s": round(wall, 1),
        "codes_mib": round(codes.nbytes / 2**20, 1),
        "growth_x_codes": round((peak - before) * 1024 / codes.nbytes, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--methods", default="pursuit,debiased")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.method = args.worker
        print(json.dumps(_worker(args)))
        return
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print("| method | N | d | steps | k | fit s | codes MiB | peak growth × codes |")
    print("|---|---|---|---|---|---|---|---|")
    for method in args.methods.split(","):
        cmd = [sys.executable, __file__, "--worker", method, "--n", str(args.n)]
        cmd += ["--dim", str(args.dim), "--steps", str(args.steps)]
        env = dict(os.environ, PYTHONPATH=ROOT)
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if out.returncode:
            print(f"| {method} | failed: {out.stderr.strip().splitlines()[-1]} |")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"| {r['method']} | {r['n']} | {r['dim']} | {r['steps']} | {r['k']} | {r['fit_s']} "
            f"| {r['codes_mib']} | {r['growth_x_codes']} |"
        )


if __name__ == "__main__":
    main()
