"""Reconcile planning: what to tell one backend so that it serves exactly the live versions.

Pure: the registry gathers the facts (live and pending versions, what the backend serves)
and carries out the plan. Only models the registry manages are touched; a backend may serve
other models of its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

Versions = Mapping[str, set[int]]


@dataclass(frozen=True)
class Load:
    model: str
    versions: tuple[int, ...]


@dataclass(frozen=True)
class Unload:
    model: str


Action = Load | Unload


def plan(managed: Iterable[str], live: Versions, pending: Versions, served: Versions) -> list[Action]:
    """The loads and unloads that bring ``served`` to ``live``.

    A version another gateway process is pushing right now (pending) may stay: that push
    loaded it a moment ago and is about to make it live.
    """
    actions: list[Action] = []
    for model in sorted(set(managed)):
        want = live.get(model, set())
        have = served.get(model, set())
        if want <= have <= want | pending.get(model, set()):
            continue
        actions.append(Load(model, tuple(sorted(want))) if want else Unload(model))
    return actions
