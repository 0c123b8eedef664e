"""aeot.FitProgress: the tqdm bar a notebook passes to fit (the log mode is tested in test_cli)."""

import io

import numpy as np
import pytest

from latentot import aeot


def test_bar_shows_steps_loss_and_closes_at_the_last_step():
    out = io.StringIO()
    bar = aeot.FitProgress(200, stream=out)  # mode="bar" is the default
    for step in (50, 100, 150, 200):
        bar(step, {"loss": np.float32(1.0 / step)})
    text = out.getvalue()
    assert "AE-OT" in text and "200/200" in text and "loss=0.005" in text
    assert bar._bar is None  # closed by the last step; close() again is harmless
    bar.close()


def test_bad_mode():
    with pytest.raises(ValueError, match="mode"):
        aeot.FitProgress(10, mode="widget")
