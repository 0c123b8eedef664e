"""The README is the contract CI reads: its first line starting with `python -m pytest` is run,
and every Python snippet in it runs as printed."""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
# The four pillars' snippets, in the order a reader meets them.
PILLARS = ("matched_lerp", "cauchy_lerp", "aeot.fit", "inverse_transport")


def python_blocks(text: str) -> list[tuple[int, str]]:
    """The ```python blocks of a Markdown text, with the line each starts on."""
    return [
        (text[: m.start()].count("\n") + 1, m.group(1))
        for m in re.finditer(r"^```python\n(.*?)^```$", text, re.S | re.M)
    ]


def test_readme_has_the_ci_test_command_on_its_own_line():
    # .ci/run does `grep -m1 '^python -m pytest' README.md`; no such line means CI runs nothing
    # and fails, so the command must start a line of its own.
    ci = (ROOT / ".ci" / "run").read_text()
    assert "grep -m1 '^python -m pytest' README.md" in ci
    readme = README.splitlines()
    lines = [ln for ln in readme if ln.startswith("python -m pytest")]
    assert lines, "README.md has no line starting with 'python -m pytest'"
    assert lines[0] == 'python -m pytest -n 2 -m "not slow"'


def test_readme_is_short_with_every_pillar_up_front():
    assert len(README.splitlines()) <= 250
    blocks = python_blocks(README)
    for name in PILLARS:
        starts = [line for line, code in blocks if name in code]
        assert starts and starts[0] <= 150, (name, starts)


@pytest.mark.heavy  # about a minute of CPU: an AE-OT fit and its inverse compile
def test_readme_python_snippets_run(tmp_path, monkeypatch):
    # In order, in one namespace (a later snippet may say "continuing from above"), in a
    # scratch directory (the AE-OT snippet saves a file).
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "readme"}
    blocks = python_blocks(README)
    assert len(blocks) >= len(PILLARS)
    for line, code in blocks:
        exec(compile(code, f"README.md:{line}", "exec"), namespace)
    # What the snippets claim about their results.
    assert namespace["path"].shape == (9, 4)
    assert namespace["grid"].shape == (5, 5, 100)
    assert namespace["per_pair"].shape == (16, 9, 100)
    assert namespace["lin"].shape == namespace["sph"].shape == (7, 32)
    assert namespace["z"].shape == (64, 4)
    assert namespace["info"].converged.shape == (8,)
    assert (tmp_path / "codes.aeot").is_file()
