"""Checkpoints: exact round trip, clear errors on bad files, atomic writes under SIGKILL."""

import os
import signal
import subprocess
import sys
import textwrap
import time
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from latentot import Gaussian, Laplace, aeot
from latentot.aeot import checkpoint


def _sampler(seed=0, prior=None, **kw):
    cfg = {"width": 16, "depth": 2, "heads": 3} | kw
    pot = aeot.Potential(3, rngs=seed, **cfg)
    prior = prior if prior is not None else Gaussian(loc=jnp.array([0.5, -1.0, 2.0]), scale=1.5)
    return aeot.Sampler.from_potential(pot, prior)


def test_round_trip_is_exact(tmp_path):
    s = _sampler(activation="gelu", temperature=0.25)
    path = tmp_path / "s.aeot"
    aeot.save(path, s)
    t = aeot.load(path)
    assert t.potential_config == s.potential_config
    for a, b in zip(
        jax.tree_util.tree_leaves(s.params), jax.tree_util.tree_leaves(t.params), strict=True
    ):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    assert type(t.prior) is Gaussian
    np.testing.assert_array_equal(t.prior.loc, s.prior.loc)
    assert t.prior.scale == s.prior.scale
    z = jax.random.normal(jax.random.key(0), (20, 3))
    np.testing.assert_array_equal(t.transport(z), s.transport(z))
    np.testing.assert_array_equal(t.sample(jax.random.key(1), 5), s.sample(jax.random.key(1), 5))
    assert [p.name for p in tmp_path.iterdir()] == ["s.aeot"]  # no temporary file left


def test_round_trip_float64_and_other_prior(tmp_path, x64):
    s = _sampler(prior=Laplace(scale=2.0), param_dtype=jnp.float64)
    aeot.save(tmp_path / "s", s)
    t = aeot.load(tmp_path / "s")
    assert t.prior == Laplace(scale=2.0)
    for a, b in zip(
        jax.tree_util.tree_leaves(s.params), jax.tree_util.tree_leaves(t.params), strict=True
    ):
        assert b.dtype == jnp.float64
        np.testing.assert_array_equal(a, b)


def test_bad_files(tmp_path):
    path = tmp_path / "s.aeot"
    aeot.save(path, _sampler())
    data = path.read_bytes()

    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        aeot.load(empty)
    for cut in (5, 20, 40, len(data) // 2, len(data) - 1):
        bad = tmp_path / f"cut{cut}"
        bad.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="truncated"):
            aeot.load(bad)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, a=np.ones(3))
    with pytest.raises(ValueError, match="not a valid latentot AE-OT checkpoint"):
        aeot.load(foreign)
    text = tmp_path / "text"
    text.write_text("hello world, this is not a checkpoint at all")
    with pytest.raises(ValueError, match="magic"):
        aeot.load(text)
    flipped = bytearray(data)
    flipped[-3] ^= 0xFF
    corrupt = tmp_path / "corrupt"
    corrupt.write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="checksum"):
        aeot.load(corrupt)
    with pytest.raises(FileNotFoundError):
        aeot.load(tmp_path / "missing")


def test_files_of_latentot_0_1_are_refused_clearly(tmp_path):
    old = tmp_path / "old.aeot"  # format 1: the same magic with version byte 1
    old.write_bytes(b"LATENTOT-AEOT\x00\x01\n" + bytes(64))
    with pytest.raises(ValueError, match=r"latentot 0\.1 \(checkpoint format 1\)"):
        aeot.load(old)
    future = tmp_path / "future.aeot"
    future.write_bytes(b"LATENTOT-AEOT\x00\x09\n" + bytes(64))
    with pytest.raises(ValueError, match="unsupported format version 9"):
        aeot.load(future)


def test_body_is_flax_msgpack_behind_a_checksummed_frame(tmp_path):
    """The format is flax's: any flax user can read a checkpoint without latentot."""
    from flax import serialization

    s = _sampler()
    path = tmp_path / "s.aeot"
    aeot.save(path, s)
    data = path.read_bytes()
    assert data[:16] == checkpoint.MAGIC
    size = int.from_bytes(data[16:24], "little")
    assert size == len(data) - 28 and int.from_bytes(data[24:28], "little") == zlib.crc32(data[28:])
    tree = serialization.msgpack_restore(data[28:])
    assert tree["kind"] == "sampler" and tree["meta"]["potential"] == s.potential_config
    leaves = jax.tree_util.tree_flatten_with_path(s.params)[0]
    assert len(leaves) == sum(k.startswith("params") for k in tree["arrays"])
    for p, leaf in leaves:
        np.testing.assert_array_equal(tree["arrays"]["params" + jax.tree_util.keystr(p)], leaf)


def test_write_read_file_round_trip_every_dtype(tmp_path):
    arrays = {
        "f32": np.linspace(-1, 1, 7, dtype=np.float32).reshape(7, 1),
        "f64": np.array([np.pi, -0.0, np.finfo(np.float64).tiny]),
        "u32": np.array([0, 2**32 - 1], np.uint32),  # raw PRNG key data
        "i8": np.array([[-128, 127]], np.int8),
        "bool": np.array([True, False]),
        "scalar": np.asarray(np.float32(2.5)),
        "empty": np.zeros((0, 3), np.float32),
    }
    meta = {"a": [1, 2.5, "x", None, True], "nested": {"t": (1, 2)}}
    checkpoint.write_file(tmp_path / "f", "training", meta, arrays)
    kind, meta2, arrays2 = checkpoint.read_file(tmp_path / "f")
    assert kind == "training" and meta2 == {"a": [1, 2.5, "x", None, True], "nested": {"t": [1, 2]}}
    assert arrays2.keys() == arrays.keys()
    for k, a in arrays.items():
        assert arrays2[k].dtype == a.dtype and arrays2[k].shape == a.shape, k
        np.testing.assert_array_equal(arrays2[k], a)
        assert arrays2[k].flags.writeable
    with pytest.raises(ValueError):
        checkpoint.write_file(tmp_path / "g", "training", {"x": float("nan")}, {})
    assert not (tmp_path / "g").exists()


_KILL_SCRIPT = textwrap.dedent(
    """
    import sys
    import jax
    from latentot import Gaussian, aeot

    path, ready = sys.argv[1], sys.argv[2]
    pot = aeot.Potential(8, width=768, depth=3, heads=4)  # ~1.2M parameters, ~5 MB
    s = aeot.Sampler.from_potential(pot, Gaussian())
    aeot.save(path, s)
    open(ready, "w").close()
    while True:
        aeot.save(path, s)
    """
)


def test_killed_while_saving_leaves_previous_checkpoint(tmp_path):
    path = tmp_path / "ckpt.aeot"
    script = tmp_path / "saver.py"
    script.write_text(_KILL_SCRIPT)
    env = os.environ | {"JAX_PLATFORMS": "cpu"}
    killed_mid_write = 0
    for attempt in range(6):
        ready = tmp_path / f"ready{attempt}"
        proc = subprocess.Popen(
            [sys.executable, str(script), str(path), str(ready)],
            cwd=os.getcwd(),
            env=env | {"PYTHONPATH": os.getcwd()},
        )
        try:
            deadline = time.time() + 120
            while not ready.exists():
                assert proc.poll() is None, "saver died"
                assert time.time() < deadline, "saver did not start"
                time.sleep(0.05)
            # Kill as soon as a save has its temporary file open (a busy machine can make
            # fixed delays miss every write), at the latest after 5 s.
            until = time.time() + 5
            while time.time() < until and not any(tmp_path.glob(".ckpt.aeot.*.tmp")):
                time.sleep(0.001)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        s = aeot.load(path)  # the last completed checkpoint is intact
        assert s.potential_config["width"] == 768
        strays = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
        killed_mid_write += bool(strays)
        for p in strays:
            p.unlink()
        if killed_mid_write:
            break
    # At least one kill landed while a temporary file was being written.
    assert killed_mid_write >= 1
