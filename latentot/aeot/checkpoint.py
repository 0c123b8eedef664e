"""Checkpoints of AE-OT samplers and training runs: one self-checking file, written atomically.

The contents are serialised by flax (:func:`flax.serialization.msgpack_serialize`: msgpack, with
every array stored as its dtype, shape and raw bytes, so the round trip is exact)::

    {"kind": "sampler" | "training", "meta": {...JSON-like...}, "arrays": {name: ndarray}}

msgpack alone cannot tell a damaged file from a different one (a flipped bit in an array decodes
to another number) nor a foreign file from ours, so the msgpack body is framed by a small
header, the only hand-written part of the format (little endian)::

    MAGIC (16 bytes, the last-but-one is the format version) | body length (8) | CRC-32 (4) | body

Reading checks the magic, the length and the checksum before decoding, so an empty, truncated,
corrupted or foreign file raises a ``ValueError`` saying so, never a decoder error from deep
inside a library. Files of format 1 (latentot 0.1) are refused with a message saying so.

Writes go through :func:`latentot._io.write_bytes_atomic` (temporary file, ``fsync``,
``os.replace``, directory ``fsync``): a process killed while saving leaves the previous
checkpoint intact (and possibly a stray ``.<name>.*.tmp`` file).
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
from flax import serialization

from latentot import _io
from latentot import priors as _priors

__all__ = ["load", "save"]

MAGIC = b"LATENTOT-AEOT\x00\x02\n"  # 16 bytes; the last-but-one byte is the format version
_FRAME = struct.Struct("<QI")  # body length, CRC-32 of the body


# --------------------------------------------------------------------------------------------
# File format.


def write_file(path, kind: str, meta: dict, arrays: dict[str, Any]) -> None:
    """Atomically writes a checkpoint file with a JSON-like ``meta`` and named ``arrays``.

    Args:
      path: destination file.
      kind: ``"sampler"`` or ``"training"``.
      meta: plain data (dicts, lists, strings, finite numbers, booleans, ``None``).
      arrays: ``{name: array}``; each is stored exactly (dtype, shape and bytes).

    Raises:
      ValueError: ``meta`` is not plain data or holds a non-finite number.
    """
    meta = json.loads(json.dumps(meta, allow_nan=False))  # plain data; tuples become lists
    body = serialization.msgpack_serialize(
        {"kind": kind, "meta": meta, "arrays": {k: np.asarray(v) for k, v in arrays.items()}}
    )
    frame = _FRAME.pack(len(body), zlib.crc32(body))
    _io.write_bytes_atomic(os.fspath(path), MAGIC + frame + body)


def read_file(path) -> tuple[str, dict, dict[str, np.ndarray]]:
    """Reads and verifies a checkpoint file: ``(kind, meta, arrays)``.

    Raises:
      ValueError: the file is empty, truncated, corrupted, of latentot 0.1's format, or not an
        AE-OT checkpoint.
      FileNotFoundError: the file does not exist.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()

    def bad(why: str) -> ValueError:
        return ValueError(f"{path!s} is not a valid latentot AE-OT checkpoint: {why}")

    if not data:
        raise bad("the file is empty")
    head = data[: len(MAGIC)]
    if head != MAGIC:
        if len(head) < len(MAGIC) and MAGIC.startswith(head):
            raise bad(f"the file is truncated ({len(data)} bytes)")
        if len(head) == len(MAGIC) and head[:-2] == MAGIC[:-2]:
            if head[-2] == 1:
                raise bad(
                    "it was written by latentot 0.1 (checkpoint format 1), which this version "
                    "no longer reads; fit and save the sampler again"
                )
            raise bad(f"unsupported format version {head[-2]}")
        raise bad("unrecognised file format (wrong magic bytes)")
    start = len(MAGIC) + _FRAME.size
    if len(data) < start:
        raise bad(f"the file is truncated (incomplete header, {len(data)} bytes)")
    size, crc = _FRAME.unpack_from(data, len(MAGIC))
    body = data[start:]
    if len(body) < size:
        raise bad(f"the file is truncated (body {len(body)} of {size} bytes)")
    if len(body) > size:
        raise bad("trailing bytes after the body")
    if zlib.crc32(body) != crc:
        raise bad("checksum mismatch (corrupted file)")
    try:
        tree = serialization.msgpack_restore(body)
        kind, meta, arrays = tree["kind"], tree["meta"], tree["arrays"]
        if not (isinstance(kind, str) and isinstance(meta, dict) and isinstance(arrays, dict)):
            raise TypeError("unexpected structure")
        arrays = {str(k): np.array(v) for k, v in arrays.items()}  # writable copies
    except Exception as e:  # any decoder failure behind a valid checksum: a malformed file
        raise bad(f"malformed contents ({type(e).__name__}: {e})") from None
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
    from latentot.aeot import pursuit

    frame = sampler.frame
    if sampler.potential_config is None and (frame is None or frame.k):
        raise ValueError(
            "save: the sampler's potential is a user module without a config; only "
            "latentot.aeot.Potential samplers can be saved"
        )
    prior_meta, prior_arrays = prior_to_meta(sampler.prior)
    meta = {"potential": sampler.potential_config, "prior": prior_meta}
    arrays = prior_arrays
    if sampler.params is not None:
        arrays = arrays | tree_to_arrays("params", sampler.params)
    if frame is not None:
        meta["frame"] = pursuit.frame_meta(frame)
        arrays = arrays | tree_to_arrays("frame", frame)
    if sampler.bounds is not None:
        arrays = arrays | {"bounds/low": sampler.bounds[0], "bounds/high": sampler.bounds[1]}
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
    from latentot.aeot import pursuit
    from latentot.aeot.sampler import Sampler, init_params

    kind, meta, arrays = read_file(path)
    if kind not in ("sampler", "training"):
        raise ValueError(f"{path!s}: unknown checkpoint kind {kind!r}")
    frame = None
    if meta.get("frame") is not None:
        try:
            template = pursuit.frame_template(meta["frame"])
        except Exception as e:
            raise ValueError(f"{path!s}: invalid frame ({e})") from None
        frame = arrays_to_tree("frame", template, arrays, path)
    config, params = None, None
    if meta.get("potential") is not None or frame is None:
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
    bounds = None
    if "bounds/low" in arrays:
        bounds = (jnp.asarray(arrays["bounds/low"]), jnp.asarray(arrays["bounds/high"]))
    return Sampler(params, prior, config, history=history, frame=frame, bounds=bounds)


def history_from_arrays(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The ``history/…`` arrays of a training checkpoint as a dict."""
    return {k[len("history/") :]: v for k, v in arrays.items() if k.startswith("history/")}
