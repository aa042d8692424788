"""The console's static files: served with a strict policy, packaged, and outside the API table."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from gateway import console
from gateway.app import all_routes
from gateway.rest import openapi
from gateway.rest.responses import EXCEPTION_HANDLERS


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    app = Starlette(routes=console.routes(), exception_handlers=EXCEPTION_HANDLERS)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1"
    ) as client:
        yield client


async def test_every_console_file_is_served_with_the_security_headers(http: httpx.AsyncClient) -> None:
    kinds = {
        "": "text/html",
        "console.js": "text/javascript",
        "console.css": "text/css",
        "vendor/uPlot.esm.js": "text/javascript",
        "vendor/uPlot.min.css": "text/css",
    }
    for name, kind in kinds.items():
        answer = await http.get(f"/console/{name}")
        assert answer.status_code == 200, name
        assert answer.headers["content-type"].startswith(kind)
        for header, value in console.HEADERS.items():
            assert answer.headers[header] == value
    assert "'unsafe-" not in console.CONTENT_SECURITY_POLICY


async def test_the_bare_path_redirects_to_the_index_and_unknown_files_404(
    http: httpx.AsyncClient,
) -> None:
    redirect = await http.get("/console")
    assert (redirect.status_code, redirect.headers["location"]) == (307, "http://127.0.0.1/console/")
    assert (await http.get("/console/missing.js")).status_code == 404
    assert (await http.get("/console/%2e%2e/__init__.py")).status_code == 404


async def test_revalidation_with_the_etag_answers_not_modified(http: httpx.AsyncClient) -> None:
    first = await http.get("/console/console.js")
    again = await http.get("/console/console.js", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304


def test_the_index_loads_only_packaged_files_and_nothing_inline() -> None:
    page = (console.STATIC / "index.html").read_text()
    assert re.search(r"<[^>]*\s(on\w+|style)=", page) is None
    assert re.findall(r"<script[^>]*>", page) == ['<script type="module" src="console.js">']
    for local in re.findall(r'(?:src|href)="([^"#:]+)"', page):
        assert (console.STATIC / local).is_file(), local


def test_the_console_is_no_part_of_the_api_or_its_openapi_document() -> None:
    assert not [r for r in all_routes() if getattr(r, "path", "").startswith("/console")]
    paths = openapi.document([*all_routes(), *console.routes()])["paths"]
    assert not [path for path in paths if path.startswith("/console")]


def test_the_vendored_chart_library_is_mit_licensed_and_assigns_no_html_strings() -> None:
    vendor = console.STATIC / "vendor"
    assert "The MIT License" in (vendor / "LICENSE").read_text()
    assert "uPlot | 1.6.32 | MIT" in (vendor / "README.md").read_text()
    # require-trusted-types-for 'script' would refuse an HTML string assigned to innerHTML.
    assert re.search(r"innerHTML|outerHTML|insertAdjacentHTML", (vendor / "uPlot.esm.js").read_text()) is None
    assert 'import uPlot from "./vendor/uPlot.esm.js";' in (console.STATIC / "model.js").read_text()


# Trusted Types would refuse these at run time; the test says so before a browser does.
HTML_STRINGS_OR_EVAL = re.compile(
    r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function\("
)


def test_the_console_modules_build_the_page_without_html_strings_or_eval() -> None:
    modules = sorted(console.STATIC.glob("*.js"))
    assert {m.name for m in modules} >= {"console.js", "lib.js", "models.js", "model.js"}
    for module in modules:
        assert HTML_STRINGS_OR_EVAL.search(module.read_text()) is None, module.name


def test_the_readmes_console_screenshots_are_in_the_repository() -> None:
    readme = Path(__file__).parents[2] / "README.md"
    images = re.findall(r"!\[[^\]]+\]\((docs/console/[^)]+\.png)\)", readme.read_text())
    assert len(images) >= 2
    for image in images:
        assert (readme.parent / image).read_bytes().startswith(b"\x89PNG"), image
