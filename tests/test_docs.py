"""The documentation site: every public name is in the API reference, every page is reachable.

Cheap checks on the sources; the built site's object inventory is checked when a build exists
(`.ci/run` builds it with `sphinx-build -W` before the tests).
"""

import importlib
import pathlib
import posixpath
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PACKAGES = ("latentot", "latentot.aeot")
INVENTORY = DOCS / "_build" / "html" / "objects.inv"


def test_api_reference_documents_each_package_by_its_all():
    api = (DOCS / "api.md").read_text()
    for package in PACKAGES:
        # automodule with :members: and no explicit list documents exactly the names of __all__.
        block = re.search(rf"\.\. automodule:: {re.escape(package)}\n((?:   .*\n)*)", api)
        assert block, package
        assert re.search(r"^   :members:\s*$", block.group(1), re.M), package


def test_every_page_is_in_the_table_of_contents():
    # A page outside every toctree fails `sphinx-build -W`; say which here, without Sphinx.
    index = (DOCS / "index.md").read_text()
    listed = set(re.findall(r"^([\w/]+)\s*$", index, re.M))
    pages = {p.stem for p in DOCS.glob("*.md")} - {"index"}
    assert pages <= listed, sorted(pages - listed)


def test_built_inventory_has_every_public_name():
    if not INVENTORY.is_file():
        pytest.skip("docs not built (sphinx-build -W --keep-going -b html docs docs/_build/html)")
    inventory = pytest.importorskip("sphinx.util.inventory")
    with INVENTORY.open("rb") as f:
        loaded = inventory.InventoryFile.load(f, "", posixpath.join)
    data = getattr(loaded, "data", loaded)  # a dict of {role: {name: item}}
    documented = {name for entries in data.values() for name in entries}
    for package in PACKAGES:
        module = importlib.import_module(package)
        missing = [n for n in module.__all__ if f"{package}.{n}" not in documented]
        assert not missing, (package, missing, "rebuild the docs if they are stale")
