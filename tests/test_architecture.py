"""The package's layering (docs/architecture.md): what importing the library pulls in."""

import ast
import graphlib
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Optional dependencies of the digits demo, the figures and the progress bars.
HEAVY = ("matplotlib", "sklearn", "tqdm")


def _loaded_after(statement: str, names: tuple[str, ...]) -> list[str]:
    """Runs ``statement`` in a fresh interpreter; returns which of ``names`` it imported."""
    code = f"import sys\n{statement}\nprint(','.join(n for n in {names!r} if n in sys.modules))"
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    return [n for n in out.stdout.strip().split(",") if n]


def test_import_latentot_is_light():
    names = (*HEAVY, "latentot.digits", "latentot.aeot")
    assert _loaded_after("import latentot", names) == []


def test_cli_imports_neither_the_demo_nor_heavy_dependencies():
    names = (*HEAVY, "latentot.digits")
    assert _loaded_after("import latentot.cli", names) == []


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """``{module: modules of the package it imports}``, function-level imports included."""
    files = {_module_name(p): p for p in sorted((ROOT / "latentot").rglob("*.py"))}
    graph = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{anchor}.{base}" if base else anchor
                # `from latentot import priors` imports the submodule latentot.priors
                targets = [
                    f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names
                ]
            else:
                continue
            deps.update(t for t in targets if t in files and t != name)
        graph[name] = deps
    return graph


def test_the_package_has_no_import_cycles():
    graph = _import_graph()
    assert {"latentot.priors", "latentot.chi", "latentot.aeot.train"} <= graph.keys()
    assert "latentot.chi" in graph["latentot.priors"]  # the parser sees the imports
    try:
        order = list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as e:
        raise AssertionError(f"import cycle: {' -> '.join(e.args[1])}") from None
    assert len(order) == len(graph)


def test_the_library_never_imports_the_digits_demo():
    graph = _import_graph()
    library = [m for m in graph if not m.startswith("latentot.digits") and m != "latentot.cli"]
    offenders = {m: sorted(d for d in graph[m] if d.startswith("latentot.digits")) for m in library}
    assert {m: d for m, d in offenders.items() if d} == {}


# The layers of docs/architecture.md, bottom up: a module imports only from its own layer or
# the ones below it.
LAYERS = {
    "infrastructure": (
        "latentot._checks",
        "latentot._io",
        "latentot._promotion",
        "latentot._sharding",
    ),
    "laws": (
        "latentot.chi",
        "latentot.priors",
        "latentot.quadrature",
        "latentot.convolution",
        "latentot.norms",
    ),
    "operations": (
        "latentot.ops",
        "latentot.splines",
        "latentot.transport",
        "latentot.matching",
        "latentot.cauchy",
    ),
    "diagnostics and AE-OT": ("latentot.diagnostics", "latentot.aeot"),
    "package": ("latentot",),
    "digits demo": ("latentot.digits",),
    "command line": ("latentot.cli", "latentot.__main__"),
}


def _layer(module: str) -> int:
    for rank, prefixes in enumerate(LAYERS.values()):
        if any(module == p or (p != "latentot" and module.startswith(p + ".")) for p in prefixes):
            return rank
    raise AssertionError(f"{module} belongs to no layer: add it to docs/architecture.md and LAYERS")


def test_modules_import_only_their_layer_or_lower_ones():
    graph = _import_graph()
    upward = sorted(
        f"{m} -> {d}" for m, deps in graph.items() for d in deps if _layer(d) > _layer(m)
    )
    assert upward == []
