"""Data-parallel scaling of AE-OT training on simulated devices, and the batched LP.

1. ``aeot.fit(..., mesh=...)`` steps per second on 1, 2, 4 and 8 devices at a fixed per-device
   batch (so the effective batch grows with the device count). Each device count runs in its
   own subprocess with ``--xla_force_host_platform_device_count``; the first ``fit`` call
   compiles, the timed second call reuses the cached compilation.
2. The batch LP: ``jax.vmap(solve_batch)`` over 8 batches against 8 sequential ``solve_batch``
   calls (one device), and the vmapped LP with its batch axis sharded over 8 devices.

On a CPU the simulated devices share the physical cores, so more devices cannot be faster;
the numbers show the overhead of the data-parallel step, not a speed-up.

Run: ``python benchmarks/scaling.py [--quick] [--devices 1 2 4 8] [--batch-size 256]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _worker_fit(args) -> dict:
    import jax
    import jax.numpy as jnp
    from jax.sharding import AxisType

    from latentot import aeot

    n = jax.device_count()
    mesh = jax.make_mesh((n,), ("data",), axis_types=(AxisType.Auto,))
    codes = _codes(args.dim, 8 * args.batch_size * n)
    kw = {
        "steps": args.steps,
        "batch_size": args.batch_size,
        "log_every": args.steps,
    }
    t = time.perf_counter()
    first = aeot.fit(jax.random.key(0), codes, mesh=mesh, **kw)
    jax.block_until_ready(first.params)
    compile_and_run = time.perf_counter() - t
    t = time.perf_counter()
    second = aeot.fit(jax.random.key(0), codes, mesh=mesh, **kw)
    jax.block_until_ready(second.params)
    run = time.perf_counter() - t
    return {
        "devices": n,
        "steps_per_s": args.steps / run,
        "points_per_s": args.steps * n * args.batch_size / run,
        "first_call_s": compile_and_run,
        "final_loss": float(jnp.asarray(second.history["loss"][-1])),
    }


def _worker_lp(args) -> dict:
    import jax
    from jax.sharding import AxisType, NamedSharding
    from jax.sharding import PartitionSpec as P

    from latentot import aeot

    k = 8
    xs = jax.random.normal(jax.random.key(0), (k, args.batch_size, args.dim))
    ys = _codes(args.dim, k * args.batch_size).reshape(k, args.batch_size, args.dim)
    out = {}
    one = jax.jit(aeot.solve_batch)
    batched = jax.jit(jax.vmap(aeot.solve_batch))
    if jax.device_count() == 1:
        jax.block_until_ready(one(xs[0], ys[0]))
        jax.block_until_ready(batched(xs, ys))
        t = time.perf_counter()
        for _ in range(args.repeats):
            res = [one(xs[i], ys[i]) for i in range(k)]
            jax.block_until_ready(res)
        out["sequential_s"] = (time.perf_counter() - t) / args.repeats
        t = time.perf_counter()
        for _ in range(args.repeats):
            jax.block_until_ready(batched(xs, ys))
        out["vmapped_s"] = (time.perf_counter() - t) / args.repeats
        lp = batched(xs, ys)
        out["max_dual_gap_rel"] = float((lp.dual_gap / lp.cost).max())
    else:
        mesh = jax.make_mesh((jax.device_count(),), ("data",), axis_types=(AxisType.Auto,))
        sh = NamedSharding(mesh, P("data"))
        xs, ys = jax.device_put(xs, sh), jax.device_put(ys, sh)
        jax.block_until_ready(batched(xs, ys))
        t = time.perf_counter()
        for _ in range(args.repeats):
            jax.block_until_ready(batched(xs, ys))
        out["vmapped_sharded_s"] = (time.perf_counter() - t) / args.repeats
    return out


def _codes(d: int, n: int):
    """Ten Gaussian clusters in d dimensions (as benchmarks/aeot_train.py), shuffled."""
    import jax

    k1, k2, k3 = jax.random.split(jax.random.key(1), 3)
    centres = 5.0 * jax.random.normal(k1, (10, d))
    return centres[jax.random.randint(k2, (n,), 0, 10)] + jax.random.normal(k3, (n, d))


def _spawn(worker: str, devices: int, args) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = env.get("JAX_PLATFORMS", "cpu")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", worker]
    cmd += ["--batch-size", str(args.batch_size), "--dim", str(args.dim)]
    cmd += ["--steps", str(args.steps), "--repeats", str(args.repeats)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise RuntimeError(f"{worker} worker on {devices} devices failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small batch and few steps")
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--batch-size", type=int, default=None, help="per device (256)")
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--steps", type=int, default=None, help="timed steps (20)")
    parser.add_argument("--repeats", type=int, default=None, help="LP timing repeats (3)")
    parser.add_argument("--worker", choices=("fit", "lp"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.batch_size is None:
        args.batch_size = 64 if args.quick else 256
    if args.steps is None:
        args.steps = 5 if args.quick else 20
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3

    if args.worker:
        import jax

        jax.config.update("jax_numpy_dtype_promotion", "strict")
        result = (_worker_fit if args.worker == "fit" else _worker_lp)(args)
        print(json.dumps(result))
        return

    print(
        f"# AE-OT data-parallel scaling: per-device batch {args.batch_size}, d = {args.dim}, "
        f"{args.steps} timed steps"
    )
    print("| devices | effective batch | steps/s | noise points/s | first call (compile) s |")
    print("|--:|--:|--:|--:|--:|")
    for n in args.devices:
        r = _spawn("fit", n, args)
        print(
            f"| {n} | {n * args.batch_size} | {r['steps_per_s']:.2f} | "
            f"{r['points_per_s']:.0f} | {r['first_call_s']:.1f} |",
            flush=True,
        )
    one = _spawn("lp", 1, args)
    many = _spawn("lp", 8, args)
    print(f"\n# Batch LP, 8 problems of m = {args.batch_size}, d = {args.dim}")
    print("| how | seconds for all 8 |")
    print("|--|--:|")
    print(f"| 8 sequential `solve_batch` calls, 1 device | {one['sequential_s']:.3f} |")
    print(f"| `vmap(solve_batch)`, 1 device | {one['vmapped_s']:.3f} |")
    sharded = many["vmapped_sharded_s"]
    print(f"| `vmap(solve_batch)`, batch axis sharded over 8 devices | {sharded:.3f} |")
    print(f"\nmax relative dual gap of the vmapped LPs: {one['max_dual_gap_rel']:.1e}")


if __name__ == "__main__":
    main()
