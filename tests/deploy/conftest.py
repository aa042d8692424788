"""Each kustomize target rendered once per session."""

from __future__ import annotations

import functools

import pytest

from tests.deploy.rendering import TARGETS, Rendered, render


@functools.cache
def rendered_target(name: str) -> Rendered:
    return Rendered(name, render(TARGETS[name]))


@pytest.fixture(params=sorted(TARGETS))
def rendered(request: pytest.FixtureRequest) -> Rendered:
    """The base and every overlay, one test each."""
    name: str = request.param
    return rendered_target(name)


@pytest.fixture
def cpu() -> Rendered:
    return rendered_target("cpu")


@pytest.fixture
def gpu() -> Rendered:
    return rendered_target("gpu")


@pytest.fixture
def trial() -> Rendered:
    return rendered_target("try")
