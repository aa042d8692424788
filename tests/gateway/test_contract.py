"""Versions of one model are interchangeable; a refusal says what differs and how to fix it."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import Conflict
from gateway.registry.admission import check_compatible
from modelpkg import Manifest, read_package


def renamed_input(manifest: Manifest, name: str) -> Manifest:
    inputs = [spec.model_copy(update={"name": name}) for spec in manifest.signature.inputs]
    return manifest.model_copy(update={"signature": manifest.signature.model_copy(update={"inputs": inputs})})


def test_inputs_that_differ_only_by_name_name_the_package_flag(demo_packages: dict[str, Path]) -> None:
    live = read_package(demo_packages["digits-sklearn"]).manifest
    with pytest.raises(Conflict) as refused:
        check_compatible("digits-sklearn", renamed_input(live, "x"), live, 1)
    assert "inputs are x FP32" in refused.value.message
    assert "only the names differ: package it again with --input-name pixels" in refused.value.message


def test_other_differences_get_no_renaming_hint(demo_packages: dict[str, Path]) -> None:
    live = read_package(demo_packages["digits-sklearn"]).manifest
    other = read_package(demo_packages["digits-keras"]).manifest
    with pytest.raises(Conflict) as refused:
        check_compatible("digits-sklearn", other, live, 1)
    assert "differs from live version 1" in refused.value.message
    assert "only the names differ" not in refused.value.message
