"""Atomic file output: nothing a user saved is ever lost or half-written."""

from __future__ import annotations

import io
import os
import tempfile
from typing import Any

import numpy as np

__all__ = ["save_figure", "save_npy", "write_bytes_atomic"]


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Writes ``data`` to ``path`` atomically.

    The bytes go to a temporary file in the same directory, which is flushed and fsynced, then
    renamed over ``path`` with ``os.replace`` (atomic on POSIX), and the directory is fsynced so
    the rename itself survives a crash. A process killed at any point leaves either the old file
    or the new one, never a mixture; at worst a stray ``.<name>.*.tmp`` file remains.

    Args:
      path: destination file.
      data: the complete contents.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:  # platforms without directory file descriptors
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def save_figure(fig: Any, path: str | os.PathLike, *, dpi: int = 100) -> None:
    """Saves a matplotlib figure as PNG, atomically (see :func:`write_bytes_atomic`)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    write_bytes_atomic(path, buf.getvalue())


def save_npy(path: str | os.PathLike, array: Any) -> None:
    """Saves an array as ``.npy`` (no pickles), atomically (see :func:`write_bytes_atomic`)."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    write_bytes_atomic(path, buf.getvalue())


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
