"""schemathesis against ``/openapi.json`` of a real gateway process (uvicorn), with a real model.

Every operation of the document is fuzzed with positive (schema-valid) and negative
(schema-violating) data, from a fixed seed, with a key that has every scope so that requests
reach the handlers rather than stop at auth. Each response must be no 5xx, have a documented
status code and content type, and match the documented schema. Afterwards the gateway must
still answer a good prediction.

Operations with a ``{model}`` parameter are fuzzed both with generated names (mostly 404s) and
pinned to the served model ``arms`` and its real versions, so that the decoders, the routing
and the deployment API see real work. Destructive operations are fenced, see ``_protected``.
"""

from __future__ import annotations

from collections import Counter
from typing import Any
from urllib.parse import unquote

import httpx
import orjson
import pytest
import requests
import schemathesis

# Loaded at collection, not lazily inside the test: rewriting these modules' asserts mid-run
# once hit CPython 3.11's "AST constructor recursion depth mismatch" SystemError (gh-106905).
import schemathesis.specs.openapi.schemas
from hypothesis import HealthCheck, Phase, given, reject, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import CheckFunction, not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Ok
from schemathesis.generation.case import Case as GenericCase
from schemathesis.schemas import APIOperation
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.e2e.arms import GOOD, MODEL
from tests.fuzz.conftest import FuzzStack

# Starts real processes (servers, gateways, redis, pip or the CLI): the e2e tier.
pytestmark = pytest.mark.e2e

Operation = APIOperation[Any, Any, Any, Any]
Case = GenericCase[Any]

SEED = 20_240_707
EXAMPLES_PER_OPERATION = 24
"""Per operation and generation mode (fewer where there is less to vary): about 1,300 requests."""
MIN_REQUESTS = 1_000
CHECKS: list[CheckFunction] = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def _strategy(operation: Operation, mode: GenerationMode, stack: FuzzStack) -> st.SearchStrategy[Case]:
    generated = operation.as_strategy(mode)
    names = {parameter.name for parameter in operation.path_parameters}
    if "model" not in names or operation.method.upper() == "DELETE":
        return generated
    strategies = [generated, operation.as_strategy(mode, path_parameters={"model": MODEL})]
    if "version" in names:
        pinned = {"model": MODEL, "version": stack.versions[0]}
        strategies.append(operation.as_strategy(mode, path_parameters=pinned))
    return st.one_of(strategies)


def _protected(case: Case, stack: FuzzStack) -> bool:
    """Requests that would cut off the rest of the run: revoking the fuzzing or the admin key,
    retiring a version of the served model (with ``force`` the last one goes too), unloading it."""
    parameters = {name: unquote(str(value)) for name, value in (case.path_parameters or {}).items()}
    if case.path.endswith("/unload"):
        return parameters.get("model") == MODEL
    if case.method.upper() != "DELETE":
        return False
    return (
        parameters.get("key_id") in (stack.key_id, stack.admin_key_id()) or parameters.get("model") == MODEL
    )


def _fuzz(
    operation: Operation, mode: GenerationMode, stack: FuzzStack, session: requests.Session
) -> tuple[int, list[str]]:
    sent = 0
    failures: list[str] = []

    @hypothesis_seed(SEED)
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @given(case=_strategy(operation, mode, stack))
    def run(case: Case) -> None:
        nonlocal sent
        if _protected(case, stack):
            reject()
        response = case.call(base_url=stack.url, session=session, headers=stack.headers, timeout=30)
        sent += 1
        try:
            case.validate_response(response, checks=CHECKS, headers=stack.headers)
        except FailureGroup as group:
            failures.append(f"[{mode.value} {operation.label}] {group}")

    try:
        run()
    except Unsatisfiable:
        # Nothing to negate (no parameters, no body): negative mode has no case to make.
        if mode is GenerationMode.POSITIVE or sent:
            raise
    return sent, failures


def test_fuzzing_the_openapi_document_finds_no_5xx_and_no_schema_break(fuzz_stack: FuzzStack) -> None:
    schema = schemathesis.openapi.from_url(f"{fuzz_stack.url}/openapi.json")
    sent: Counter[str] = Counter()
    failures: list[str] = []
    with requests.Session() as session:
        for result in schema.get_all_operations():
            assert isinstance(result, Ok), result
            operation = result.ok()
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                count, found = _fuzz(operation, mode, fuzz_stack, session)
                sent[operation.label] += count
                failures += found
    total = sum(sent.values())
    print(f"schemathesis sent {total} requests over {len(sent)} operations")
    distinct = list(dict.fromkeys(failures))
    assert not failures, f"{len(failures)} failing requests, {len(distinct)} distinct:\n\n" + "\n\n".join(
        distinct[:10]
    )
    assert total >= MIN_REQUESTS, sent
    assert all(sent.values()), [label for label, count in sent.items() if not count]
    # Still serving: a good prediction through both JSON front ends.
    v1 = httpx.post(
        f"{fuzz_stack.url}/v1/models/{MODEL}:predict",
        json={"instances": [GOOD]},
        headers=fuzz_stack.headers,
    )
    assert v1.status_code == 200, v1.text
    assert v1.json()["predictions"] == [GOOD]
    v2 = httpx.post(
        f"{fuzz_stack.url}/v2/models/{MODEL}/infer",
        json={"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": GOOD}]},
        headers=fuzz_stack.headers,
    )
    assert v2.status_code == 200, v2.text
    assert v2.json()["outputs"][0]["data"] == GOOD


def test_requests_that_once_answered_500_are_client_errors(fuzz_stack: FuzzStack) -> None:
    """What fuzzing found: each of these was a 500 (an unhandled exception in the gateway)."""
    huge = "8978064602698645982311"  # past SQLite's INTEGER range: OverflowError in the lookup
    good = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": GOOD}]}
    with httpx.Client(base_url=fuzz_stack.url, headers=fuzz_stack.headers, timeout=30) as client:
        assert client.get("/v1/admin/audit", params={"before": huge}).status_code == 200
        for model in (MODEL, "no-such-model"):
            for method, path in (
                ("GET", f"/v1/admin/models/{model}/versions/{huge}"),
                ("GET", f"/v1/admin/models/{model}/versions/{huge}/package"),
                ("DELETE", f"/v1/admin/models/{model}/versions/{huge}"),
            ):
                response = client.request(method, path)
                assert response.status_code == 404, (method, path, response.text)
        # '²'.isdigit() is true but int('²') raises: the binary extension's header length.
        # (HTTP header values are latin-1, which has the superscripts.)
        for length in (b"\xb2", b"\xb9\xb2"):
            response = client.post(
                f"/v2/models/{MODEL}/infer",
                content=orjson.dumps(good),
                headers={b"Inference-Header-Content-Length": length},
            )
            assert response.status_code == 400, response.text
        # BYTES data nested 900 deep: a recursive walk hit RecursionError (orjson parses 1024 levels).
        nested = b"[" * 900 + b'"a"' + b"]" * 900
        body = b'{"inputs":[{"name":"x","datatype":"BYTES","shape":[1],"data":%s}]}' % nested
        response = client.post(f"/v2/models/{MODEL}/infer", content=body)
        assert response.status_code == 400, response.text
