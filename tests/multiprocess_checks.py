"""``aeot.fit(mesh=...)`` with ``method="pursuit"`` on a mesh across two processes.

Runnable by hand (``tests/test_multiprocess.py`` launches it under ``-m slow``)::

    python tests/multiprocess_checks.py [numpy|global] [devices per process]

launches two CPU processes (``jax.distributed`` with a localhost coordinator, gloo collectives,
each with the given number of simulated devices) that fit the same codes with a mesh over all
their devices, given either as the same full NumPy array on each process (``numpy``) or as a
global ``jax.Array`` assembled from each process's rows (``global``); then fits them in this
process without a mesh and checks that

* both processes found the same frame (same k, same number of layers, identical arrays) and
  chose ``"pursuit"`` with ``method="auto"``;
* the frame agrees with the single-process one: same k and number of layers;
* the samples of the two-process sampler and of the single-process one have close marginals
  (two-sample KS along the codes' principal directions).

Prints ``OK multiprocess <input>`` at the end.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

N, D, K = 8192, 40, 4
STEPS = 40
SAMPLES = 4096
HELD_OUT = 1024
ICA_SAMPLE = 1000  # below the fitting rows: FastICA's first pass on a sample


def make_codes() -> np.ndarray:
    """``[N, D]`` codes: K spiked directions with clusters, two Laplace directions of the bulk's
    variance and a bulk whose radius is not chi's (the layers' work), rotated."""
    rng = np.random.default_rng(0)
    z = rng.standard_normal((N, D))
    centres = 4.0 * rng.standard_normal((6, K))
    z[:, :K] = 1.5 * z[:, :K] + centres[rng.integers(6, size=N)]
    z[:, K : K + 2] = rng.laplace(size=(N, 2)) / np.sqrt(2.0)
    z[:, K + 2 :] *= np.exp(0.25 * rng.standard_normal((N, 1)))
    q, _ = np.linalg.qr(rng.standard_normal((D, D)))
    return (z @ q.T + 1.0).astype(np.float32)


def _frame_arrays(frame) -> list[np.ndarray]:
    import jax

    return [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(frame)]


def worker(pid: int, port: int, out: str, kind: str) -> None:
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=f"localhost:{port}", num_processes=2, process_id=pid
    )
    from jax.experimental import multihost_utils
    from jax.sharding import AxisType, NamedSharding
    from jax.sharding import PartitionSpec as P

    from latentot import aeot

    mesh = jax.make_mesh((jax.device_count(),), ("data",), axis_types=(AxisType.Auto,))
    assert jax.process_count() == 2 and jax.device_count() == 2 * jax.local_device_count()
    codes = make_codes()
    assert aeot.resolve_method("auto", D, mesh=mesh) == "pursuit"
    if kind == "global":
        per = N // 2
        local = codes[pid * per : (pid + 1) * per]
        codes = jax.make_array_from_process_local_data(NamedSharding(mesh, P("data")), local)
        assert not codes.is_fully_addressable
    s = aeot.fit(jax.random.key(0), codes, mesh=mesh, steps=STEPS, batch_size=128)
    x = jax.random.normal(jax.random.key(1), (SAMPLES, D))
    samples = multihost_utils.process_allgather(jax.jit(s.transport)(x), tiled=True)
    # The search alone with FastICA's first pass on a sample of the rows.
    sub, _ = _small_sample_frame(codes, mesh)
    np.savez(
        Path(out) / f"worker{pid}.npz",
        k=s.k,
        layers=len(s.frame.layers),
        samples=np.asarray(samples),
        sub_k=sub.k,
        sub_layers=len(sub.layers),
        **{f"frame{i}": a for i, a in enumerate(_frame_arrays(s.frame))},
        **{f"sub{i}": a for i, a in enumerate(_frame_arrays(sub))},
    )
    kinds = [type(layer).__name__ for layer in s.frame.layers]
    print(f"worker {pid}: k={s.k} layers={kinds}", flush=True)


def _small_sample_frame(codes, mesh):
    from latentot.aeot import pursuit

    held_out = make_codes()[:HELD_OUT]
    rows = np.arange(HELD_OUT, N)
    return pursuit.find_frame(codes, held_out, fit_rows=rows, ica_sample=ICA_SAMPLE, mesh=mesh)


def reference(out: str) -> None:
    import jax

    from latentot import aeot

    s = aeot.fit(jax.random.key(0), make_codes(), steps=STEPS, batch_size=128)
    x = jax.random.normal(jax.random.key(1), (SAMPLES, D))
    sub, _ = _small_sample_frame(make_codes(), None)
    np.savez(
        Path(out) / "reference.npz",
        k=s.k,
        layers=len(s.frame.layers),
        samples=np.asarray(s.transport(x)),
        sub_k=sub.k,
        sub_layers=len(sub.layers),
    )
    print(f"reference: k={s.k} layers={len(s.frame.layers)}", flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def launch(kind: str, devices: int, timeout: float = 420.0) -> None:
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    env["JAX_PLATFORMS"] = "cpu"
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    with tempfile.TemporaryDirectory() as out:
        port = _free_port()
        procs = [
            subprocess.Popen(
                [sys.executable, __file__, "worker", str(i), str(port), out, kind],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for i in range(2)
        ]
        ref_env = {k: v for k, v in env.items() if k != "XLA_FLAGS"}
        ref = subprocess.run(
            [sys.executable, __file__, "reference", out],
            env=ref_env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        # A worker whose peer failed would wait for it in a collective: stop both then.
        start = time.monotonic()
        while any(p.poll() is None for p in procs):
            failed = any(p.poll() not in (None, 0) for p in procs)
            if failed or time.monotonic() - start > timeout:
                for p in procs:
                    if p.poll() is None:
                        p.kill()
                break
            time.sleep(1.0)
        logs = [p.communicate()[0] for p in procs]
        for i, (p, log) in enumerate(zip(procs, logs, strict=True)):
            print(f"--- worker {i} (exit {p.returncode})\n{log[-4000:]}")
        print(f"--- reference (exit {ref.returncode})\n{(ref.stdout + ref.stderr)[-4000:]}")
        if any(p.returncode for p in procs) or ref.returncode:
            raise SystemExit("a process failed")
        w = [dict(np.load(Path(out) / f"worker{i}.npz")) for i in range(2)]
        r = dict(np.load(Path(out) / "reference.npz"))
    keys = sorted(w[0])
    assert keys == sorted(w[1]), "the processes' frames differ in structure"
    for key in keys:
        np.testing.assert_array_equal(w[0][key], w[1][key], err_msg=f"{key} differs")
    print(f"processes agree: k={int(w[0]['k'])} layers={int(w[0]['layers'])}")
    assert int(w[0]["k"]) == int(r["k"]) == K, (int(w[0]["k"]), int(r["k"]))
    assert int(w[0]["layers"]) == int(r["layers"]), (int(w[0]["layers"]), int(r["layers"]))
    sub = (int(w[0]["sub_k"]), int(w[0]["sub_layers"]))
    assert sub == (int(r["sub_k"]), int(r["sub_layers"])), (sub, r["sub_k"], r["sub_layers"])
    print(f"search on a FastICA sample: k={sub[0]} layers={sub[1]} (as one process)")
    codes = make_codes().astype(np.float64)
    _, v = np.linalg.eigh(np.cov(codes, rowvar=False))
    a, b = w[0]["samples"] @ v, r["samples"] @ v
    ks = [_ks_two(a[:, j], b[:, j]) for j in range(D)]
    print(f"marginal KS (two processes vs one): max {max(ks):.4f}, mean {np.mean(ks):.4f}")
    assert max(ks) < 0.06, max(ks)
    print(f"OK multiprocess {kind}")


def _ks_two(a, b) -> float:
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    fa = np.searchsorted(a, grid, side="right") / len(a)
    fb = np.searchsorted(b, grid, side="right") / len(b)
    return float(np.max(np.abs(fa - fb)))


if __name__ == "__main__":
    args = sys.argv[1:]
    if args and args[0] == "worker":
        worker(int(args[1]), int(args[2]), args[3], args[4])
    elif args and args[0] == "reference":
        reference(args[1])
    else:
        launch(args[0] if args else "numpy", int(args[1]) if len(args) > 1 else 2)
