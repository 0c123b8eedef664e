"""The README is the contract CI reads: its first line starting with `python -m pytest` is run."""

import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_readme_has_the_ci_test_command_on_its_own_line():
    # .ci/run does `grep -m1 '^python -m pytest' README.md`; no such line means CI runs nothing
    # and fails, so the command must start a line of its own.
    ci = (ROOT / ".ci" / "run").read_text()
    assert "grep -m1 '^python -m pytest' README.md" in ci
    readme = (ROOT / "README.md").read_text().splitlines()
    lines = [ln for ln in readme if ln.startswith("python -m pytest")]
    assert lines, "README.md has no line starting with 'python -m pytest'"
    assert lines[0] == 'python -m pytest -n 2 -m "not slow"'
