"""The folder graph: which top-level folder imports which, counting every import, even in functions.

Run ``python -m tests.layers`` to print it (one line per folder, the folders it imports and how
many imports each edge has); ``lint-imports`` checks the layer contract in ``pyproject.toml``.
Built with grimp, the graph library import-linter uses.
"""

from __future__ import annotations

import sys
import tomllib
from collections import Counter
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]


def top_level_folders() -> list[str]:
    """The contract's root packages, in the order pyproject.toml lists them (bottom first)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return list(config["tool"]["importlinter"]["root_packages"])


def folder_graph(folders: list[str]) -> dict[str, Counter[str]]:
    """folder -> Counter of the other folders it imports (number of importing lines)."""
    graph = grimp.build_graph(*folders, include_external_packages=False)
    edges: dict[str, Counter[str]] = {folder: Counter() for folder in folders}
    for module in graph.modules:
        source = module.split(".")[0]
        for imported in graph.find_modules_directly_imported_by(module):
            target = imported.split(".")[0]
            if target != source:
                details = graph.get_import_details(importer=module, imported=imported)
                edges[source][target] += max(len(details), 1)
    return edges


def cycles(edges: dict[str, Counter[str]]) -> list[list[str]]:
    """Every folder loop (as a path that returns to its start); empty when the graph is a DAG."""
    found: list[list[str]] = []

    def walk(path: list[str]) -> None:
        for target in sorted(edges[path[-1]]):
            if target == path[0]:
                found.append([*path, target])
            elif target not in path and target > path[0]:  # each loop once, from its smallest folder
                walk([*path, target])

    for start in sorted(edges):
        walk([start])
    return found


def main() -> int:
    folders = top_level_folders()
    edges = folder_graph(folders)
    for folder in reversed(folders):
        imports = ", ".join(f"{target} ({count})" for target, count in edges[folder].most_common())
        print(f"{folder:<11} → {imports or '(nothing of the project)'}")
    loops = cycles(edges)
    print("loops:", "; ".join(" → ".join(loop) for loop in loops) if loops else "none")
    return 1 if loops else 0


if __name__ == "__main__":
    sys.exit(main())
