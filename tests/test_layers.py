"""The folder graph has no loop, and the layer contract names every top-level package."""

from __future__ import annotations

from collections import Counter

import grimp

from tests.layers import ROOT, cycles, folder_graph, top_level_folders


def test_no_folder_imports_another_that_imports_it_back() -> None:
    assert cycles(folder_graph(top_level_folders())) == []


def test_cycle_finder_sees_a_loop_through_three_folders() -> None:
    edges = {"a": Counter({"b": 1}), "b": Counter({"c": 1}), "c": Counter({"a": 2}), "d": Counter()}
    assert cycles(edges) == [["a", "b", "c", "a"]]


def test_every_python_folder_at_the_top_is_in_the_contract() -> None:
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    assert packages == set(top_level_folders())


def test_no_module_imports_the_package_it_belongs_to() -> None:
    """A package's ``__init__`` may gather its modules; none of them may import it back (a loop
    that works only in one import order)."""
    graph = grimp.build_graph(*top_level_folders(), include_external_packages=False)
    back = [
        (module, parent)
        for module in sorted(graph.modules)
        for parent in (".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1))
        if graph.direct_import_exists(importer=module, imported=parent)
    ]
    assert back == []
