"""Progress of :func:`latentot.aeot.fit`: a callback for notebooks, scripts and the CLI.

``fit`` is silent for its minute or more of training unless it is given a callback;
:class:`FitProgress` is that callback, a tqdm bar (``tqdm.auto``: a widget in Jupyter when
ipywidgets is installed, a text bar otherwise) with the step, the loss and the ETA::

    sampler = aeot.fit(rng, codes, prior=prior, steps=3000, callback=aeot.FitProgress(3000))

Without a terminal (logs, CI) ``mode="log"`` writes a line at least every 10% of the steps or
30 s instead. tqdm is imported on first use only.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable
from typing import TextIO

__all__ = ["FitProgress"]


def _elapsed(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds >= 60 else f"{seconds} s"


class FitProgress:
    """Progress of ``aeot.fit``, passed as its ``callback(step, metrics)``.

    ``fit`` calls it on the host once per chunk of ``log_every`` steps with the step reached and
    the chunk's metrics (at least ``metrics["loss"]``). ``mode="bar"`` (the default) drives a
    ``tqdm.auto`` bar: steps done, the loss, elapsed time and ETA; it closes itself at the last
    step. ``mode="log"`` writes a line ``latentot: fit: step 300/1000 (30%), loss 0.0123, 12 s
    elapsed`` to ``stream`` whenever 10% of the steps or 30 s have passed since the last line,
    and at the last step; ``mode="off"`` writes nothing.

    Args:
      steps: the total number of steps of the run (``fit``'s ``steps``).
      mode: ``"bar"``, ``"log"`` or ``"off"``.
      stream: where the bar or the lines go (default ``sys.stderr``).
      write: in ``"log"`` mode, instead of ``stream``: called with the line's text without the
        ``latentot:`` prefix and the elapsed time (the CLI passes its timestamping logger).
      every_s: seconds between lines at most (when a chunk ends after that long).
      clock: a monotonic clock in seconds (for tests).
      desc: the bar's label.
    """

    def __init__(
        self,
        steps: int,
        *,
        mode: str = "bar",
        stream: TextIO | None = None,
        write: Callable[[str], None] | None = None,
        every_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        desc: str = "AE-OT",
    ):
        if mode not in ("bar", "log", "off"):
            raise ValueError(f"mode must be 'bar', 'log' or 'off', got {mode!r}")
        self.steps = steps
        self.mode = mode
        self.stream = stream
        self.write = write
        self.every_s = every_s
        self.clock = clock
        self.desc = desc
        self.every_steps = max(1, steps // 10)
        self._start = clock()
        self._last_time = self._start
        self._last_step: int | None = None
        self._bar = None
        self.lines = 0

    def __call__(self, step: int, metrics: dict) -> None:
        step = int(step)
        loss = float(metrics["loss"])
        if self.mode == "bar":
            if self._bar is None:
                self._bar = _tqdm()(
                    total=self.steps, desc=self.desc, file=self.stream or sys.stderr
                )
            self._bar.update(step - self._bar.n)
            self._bar.set_postfix(loss=f"{loss:.4g}")
            if step >= self.steps:
                self.close()
            return
        if self.mode == "off":
            return
        now = self.clock()
        if self._last_step is None:  # the first chunk (of a fresh or a resumed run)
            due = True
        else:
            due = (
                step - self._last_step >= self.every_steps
                or now - self._last_time >= self.every_s
                or step >= self.steps
            )
        if due:
            percent = 100 * step / self.steps if self.steps else 100.0
            text = f"fit: step {step}/{self.steps} ({percent:.0f}%), loss {loss:.4g}"
            if self.write is not None:
                self.write(text)
            else:
                elapsed = _elapsed(now - self._start)
                print(
                    f"latentot: {text}, {elapsed} elapsed",
                    file=self.stream or sys.stderr,
                    flush=True,
                )
            self._last_step, self._last_time = step, now
            self.lines += 1

    def close(self) -> None:
        """Closes the bar (if any); ``fit`` needs no call when the run reaches ``steps``."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _tqdm():
    """``tqdm.auto.tqdm``. Inside Jupyter without ipywidgets it falls back to the text bar, which
    works there too; its warning about the missing widget is not shown."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*IProgress not found.*")
        from tqdm.auto import tqdm
    return tqdm
