"""Checkpoints of AE-OT samplers and training runs: one self-checking file, written atomically.

File layout (little endian)::

    MAGIC (16 bytes) | header length (8 bytes) | header (UTF-8 JSON) | payload

The header holds the kind of checkpoint (``"sampler"`` or ``"training"``), the configuration,
and for every array its name, dtype, shape, offset and size in the payload, plus CRC-32 checksums
of the header and the payload. Reading checks the magic, the lengths and both checksums, so a
truncated, empty, corrupted or foreign file raises a ``ValueError`` saying so, never a decoder
error from deep inside a library. Arrays are stored as raw bytes: the round trip is exact.

Writes go to a temporary file in the destination directory, which is flushed, ``fsync``-ed and
renamed over the destination with ``os.replace`` (atomic on POSIX); the directory is then
``fsync``-ed. A process killed while saving leaves the previous checkpoint intact (and possibly a
stray ``.<name>.*.tmp`` file, which the next successful save to the same path does not need).
"""

from __future__ import annotations

import dataclasses
import json
import os
import struct
import zlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from latentot import _io
from latentot import priors as _priors

__all__ = ["load", "save"]

MAGIC = b"LATENTOT-AEOT\x00\x01\n"  # 16 bytes; the last-but-one byte is the format version
_LEN = struct.Struct("<Q")
_MAX_HEADER = 1 << 30


# --------------------------------------------------------------------------------------------
# Raw file format.


def write_file(path, kind: str, meta: dict, arrays: dict[str, Any]) -> None:
    """Atomically writes a checkpoint file with a JSON ``meta`` and named ``arrays``."""
    path = os.fspath(path)
    specs, chunks, offset = [], [], 0
    for name, value in arrays.items():
        a = np.asarray(value)  # (np.ascontiguousarray would turn 0-d arrays into 1-d ones)
        data = a.tobytes(order="C")
        specs.append(
            {"name": name, "dtype": a.dtype.name, "shape": list(a.shape), "offset": offset}
        )
        chunks.append(data)
        offset += len(data)
    payload = b"".join(chunks)
    header = {
        "kind": kind,
        "meta": meta,
        "arrays": specs,
        "payload_size": len(payload),
        "payload_crc32": zlib.crc32(payload),
    }
    hbytes = json.dumps(header, sort_keys=True, allow_nan=False).encode()
    hcrc = struct.pack("<I", zlib.crc32(hbytes))
    _io.write_bytes_atomic(path, MAGIC + _LEN.pack(len(hbytes) + 4) + hcrc + hbytes + payload)


def read_file(path) -> tuple[str, dict, dict[str, np.ndarray]]:
    """Reads and verifies a checkpoint file: ``(kind, meta, arrays)``.

    Raises:
      ValueError: the file is empty, truncated, corrupted or not an AE-OT checkpoint.
      FileNotFoundError: the file does not exist.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()

    def bad(why: str) -> ValueError:
        return ValueError(f"{path!s} is not a valid latentot AE-OT checkpoint: {why}")

    if not data:
        raise bad("the file is empty")
    if len(data) < len(MAGIC) + _LEN.size:
        if MAGIC.startswith(data[: len(MAGIC)]):
            raise bad(f"the file is truncated ({len(data)} bytes)")
        raise bad("unrecognised file format (wrong magic bytes)")
    if data[: len(MAGIC)] != MAGIC:
        if data[: len(MAGIC) - 2] == MAGIC[:-2]:
            raise bad(f"unsupported format version {data[len(MAGIC) - 2]}")
        raise bad("unrecognised file format (wrong magic bytes)")
    (hlen,) = _LEN.unpack_from(data, len(MAGIC))
    start = len(MAGIC) + _LEN.size
    if hlen < 4 or hlen > _MAX_HEADER or start + hlen > len(data):
        raise bad("the file is truncated (incomplete header)")
    (hcrc,) = struct.unpack_from("<I", data, start)
    hbytes = data[start + 4 : start + hlen]
    if zlib.crc32(hbytes) != hcrc:
        raise bad("header checksum mismatch (corrupted file)")
    try:
        header = json.loads(hbytes.decode())
        kind, meta, specs = header["kind"], header["meta"], header["arrays"]
        size, crc = int(header["payload_size"]), int(header["payload_crc32"])
    except (ValueError, KeyError, TypeError) as e:
        raise bad(f"malformed header ({e})") from None
    payload = data[start + hlen :]
    if len(payload) < size:
        raise bad(f"the file is truncated (payload {len(payload)} of {size} bytes)")
    if len(payload) > size:
        raise bad("trailing bytes after the payload")
    if zlib.crc32(payload) != crc:
        raise bad("payload checksum mismatch (corrupted file)")
    arrays = {}
    try:
        for spec in specs:
            dtype = jnp.dtype(spec["dtype"])
            shape = tuple(int(s) for s in spec["shape"])
            count = int(np.prod(shape, dtype=np.int64))
            off = int(spec["offset"])
            nbytes = count * dtype.itemsize
            if off < 0 or off + nbytes > size:
                raise ValueError(f"array {spec['name']!r} lies outside the payload")
            arr = np.frombuffer(payload, dtype=dtype, count=count, offset=off).reshape(shape)
            arrays[spec["name"]] = arr.copy()
    except (ValueError, KeyError, TypeError) as e:
        raise bad(f"malformed array table ({e})") from None
    return kind, meta, arrays


# --------------------------------------------------------------------------------------------
# Pytrees and priors.


def tree_to_arrays(prefix: str, tree) -> dict[str, np.ndarray]:
    """Flattens a pytree into ``{prefix/keypath: array}``."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {f"{prefix}{jax.tree_util.keystr(p)}": np.asarray(v) for p, v in leaves}


def arrays_to_tree(prefix: str, template, arrays: dict[str, np.ndarray], path) -> Any:
    """Fills ``template``'s leaves from ``arrays`` written by :func:`tree_to_arrays`."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    out = []
    for p, t in leaves:
        name = f"{prefix}{jax.tree_util.keystr(p)}"
        if name not in arrays:
            raise ValueError(f"{path!s}: checkpoint lacks the array {name!r}")
        a = arrays[name]
        if a.shape != tuple(t.shape) or a.dtype != t.dtype:
            raise ValueError(
                f"{path!s}: array {name!r} has {a.dtype}{list(a.shape)}, "
                f"the configuration expects {t.dtype}{list(t.shape)}"
            )
        out.append(jnp.asarray(a))
    return jax.tree_util.tree_unflatten(treedef, out)


_PRIORS = {
    cls.__name__: cls
    for cls in (
        _priors.Gaussian,
        _priors.Uniform,
        _priors.Cauchy,
        _priors.Laplace,
        _priors.Logistic,
    )
}


def prior_to_meta(prior) -> tuple[dict | None, dict[str, np.ndarray]]:
    """``(meta, arrays)`` describing a latentot prior, or ``(None, {})`` for a foreign one."""
    cls = type(prior)
    if _PRIORS.get(cls.__name__) is not cls:
        return None, {}
    fields = [f.name for f in dataclasses.fields(prior)]
    arrays = {f"prior/{f}": np.asarray(getattr(prior, f)) for f in fields}
    return {"type": cls.__name__, "fields": fields}, arrays


def prior_from_meta(meta: dict | None, arrays: dict[str, np.ndarray], path):
    """Rebuilds a prior written by :func:`prior_to_meta` (``None`` for a foreign prior)."""
    if meta is None:
        return None
    cls = _PRIORS.get(meta.get("type"))
    if cls is None:
        raise ValueError(f"{path!s}: unknown prior type {meta.get('type')!r}")
    kwargs = {}
    for f in meta["fields"]:
        a = arrays[f"prior/{f}"]
        kwargs[f] = float(a) if a.ndim == 0 else jnp.asarray(a)
    return cls(**kwargs)


# --------------------------------------------------------------------------------------------
# Public API.


def save(path, sampler) -> None:
    """Saves a :class:`~latentot.aeot.Sampler` (configuration, prior and parameters) to ``path``.

    The write is atomic (temporary file, ``fsync``, ``os.replace``). Priors from
    :mod:`latentot.priors` are stored; any other prior must be passed again to :func:`load`.

    Raises:
      ValueError: the sampler's potential is a user module without a ``config`` (it cannot be
        rebuilt on load; save its state with Flax's own serialization instead).
    """
    if sampler.potential_config is None:
        raise ValueError(
            "save: the sampler's potential is a user module without a config; only "
            "latentot.aeot.Potential samplers can be saved"
        )
    prior_meta, prior_arrays = prior_to_meta(sampler.prior)
    meta = {"potential": sampler.potential_config, "prior": prior_meta}
    arrays = tree_to_arrays("params", sampler.params) | prior_arrays
    write_file(path, "sampler", meta, arrays)


def load(path, *, prior=None):
    """Loads a sampler written by :func:`save`, or the sampler of a training checkpoint.

    Args:
      path: the checkpoint file.
      prior: overrides the stored prior; required when the checkpoint was saved with a prior
        outside :mod:`latentot.priors`.

    Returns:
      The :class:`~latentot.aeot.Sampler`, with ``history`` set for training checkpoints.

    Raises:
      ValueError: empty, truncated, corrupted or foreign file, or inconsistent contents.
    """
    from latentot.aeot.sampler import Sampler, init_params

    kind, meta, arrays = read_file(path)
    if kind not in ("sampler", "training"):
        raise ValueError(f"{path!s}: unknown checkpoint kind {kind!r}")
    try:
        config = dict(meta["potential"])
        template = jax.eval_shape(lambda: init_params(config, 0))
    except Exception as e:
        raise ValueError(f"{path!s}: invalid potential configuration ({e})") from None
    params = arrays_to_tree("params", template, arrays, path)
    stored_prior = prior_from_meta(meta.get("prior"), arrays, path)
    prior = prior if prior is not None else stored_prior
    if prior is None:
        raise ValueError(f"{path!s} was saved with a custom prior: pass prior= to load()")
    history = history_from_arrays(arrays) if kind == "training" else None
    return Sampler(params, prior, config, history=history)


def history_from_arrays(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The ``history/…`` arrays of a training checkpoint as a dict."""
    return {k[len("history/") :]: v for k, v in arrays.items() if k.startswith("history/")}
