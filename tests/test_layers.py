"""The folder graph has no loop, and the layer contract names every top-level package."""

from __future__ import annotations

from collections import Counter

from tests.layers import ROOT, cycles, folder_graph, top_level_folders


def test_no_folder_imports_another_that_imports_it_back() -> None:
    assert cycles(folder_graph(top_level_folders())) == []


def test_cycle_finder_sees_a_loop_through_three_folders() -> None:
    edges = {"a": Counter({"b": 1}), "b": Counter({"c": 1}), "c": Counter({"a": 2}), "d": Counter()}
    assert cycles(edges) == [["a", "b", "c", "a"]]


def test_every_python_folder_at_the_top_is_in_the_contract() -> None:
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    assert packages == set(top_level_folders())
