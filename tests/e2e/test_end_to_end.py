"""package → push → predict through v1 and v2 JSON and tritonclient.http, with auth, batching and bounds."""

from __future__ import annotations

import asyncio
import re

import httpx
import numpy as np
import pytest
import tritonclient.http as triton_http

from gateway.auth.keys import with_keys
from gateway.process import GatewayProcess
from gateway.settings import GatewaySettings
from modelpkg import read_package
from tests.e2e.conftest import DemoPackage, run_cli


def headers(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def create_key(
    gateway: GatewayProcess, *scopes: str, models: list[str] | None = None, database_url: str | None = None
) -> str:
    """A key in the gateway's database (its data folder's, or ``database_url``'s, else
    MDEPLOY_DATABASE_URL's)."""
    settings = GatewaySettings(data_dir=gateway.data_dir)
    if database_url:
        settings = settings.model_copy(update={"database_url": database_url})
    return with_keys(settings, lambda keys: keys.create(scopes, models=models)).key


def samples(package: DemoPackage) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    read = read_package(package.path)
    inputs = read.samples.inputs
    return inputs["pixels"], read.samples.outputs


def test_v1_rows_and_columns_predict_what_the_package_promised(
    gateway: GatewayProcess, pushed: dict[str, DemoPackage]
) -> None:
    for package in pushed.values():
        pixels, expected = samples(package)
        key = gateway.admin_key
        rows = httpx.post(
            f"{gateway.url}/v1/models/{package.name}:predict",
            json={"instances": pixels.tolist()},
            headers=headers(key),
        )
        assert rows.status_code == 200, rows.text
        body = rows.json()
        predictions = body["predictions"]
        probabilities = (
            np.array([p["probabilities"] for p in predictions])
            if isinstance(predictions[0], dict)
            else np.array(predictions)
        )
        np.testing.assert_allclose(probabilities, expected["probabilities"], atol=1e-5)
        if isinstance(predictions[0], dict) and "label" in predictions[0]:
            # As TF Serving: an output of one value per row gives that value, not a list of one.
            assert [p["label"] for p in predictions] == expected["label"].tolist()
        assert rows.headers["x-model-version"] == body["model_version"]
        columns = httpx.post(
            f"{gateway.url}/v1/models/{package.name}:predict",
            json={"inputs": {"pixels": pixels.tolist()}},
            headers=headers(key),
        )
        assert columns.status_code == 200, columns.text
        outputs = columns.json()["outputs"]
        got = np.array(outputs["probabilities"] if isinstance(outputs, dict) else outputs)
        np.testing.assert_allclose(got, expected["probabilities"], atol=1e-5)


def test_v1_labels_name_the_top_class(gateway: GatewayProcess, pushed: dict[str, DemoPackage]) -> None:
    package = pushed["sklearn"]
    pixels, expected = samples(package)
    response = httpx.post(
        f"{gateway.url}/v1/models/{package.name}:predict?labels=true",
        json={"instances": pixels[:4].tolist()},
        headers=headers(gateway.admin_key),
    )
    assert response.status_code == 200, response.text
    assert response.json()["labels"] == [str(int(i)) for i in expected["probabilities"][:4].argmax(axis=1)]


def test_v2_json_inference_and_request_ids(gateway: GatewayProcess, pushed: dict[str, DemoPackage]) -> None:
    package = pushed["keras"]
    pixels, expected = samples(package)
    body = {
        "id": "mine",
        "inputs": [
            {
                "name": "pixels",
                "shape": list(pixels.shape),
                "datatype": "FP32",
                "data": pixels.ravel().tolist(),
            }
        ],
    }

    def infer(model: str, request_id: str | None = None) -> httpx.Response:
        extra = {"X-Request-Id": request_id} if request_id else {}
        sent = {**headers(gateway.admin_key), **extra}
        return httpx.post(f"{gateway.url}/v2/models/{model}/infer", json=body, headers=sent)

    response = infer(package.name, "client-id-1")
    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"] == "client-id-1"
    document = response.json()
    assert document["id"] == "mine"
    output = next(o for o in document["outputs"] if o["name"] == "probabilities")
    got = np.array(output["data"], dtype=np.float32).reshape(output["shape"])
    np.testing.assert_allclose(got, expected["probabilities"], atol=1e-5)
    generated = infer(package.name)
    assert re.fullmatch(r"[0-9a-f]{32}", generated.headers["x-request-id"])
    refused = infer("no-such-model", "client-id-2")  # errors of the fast path carry it too
    assert refused.status_code == 404, refused.text
    assert refused.headers["x-request-id"] == "client-id-2"


def test_tritonclient_http_works_unchanged(gateway: GatewayProcess, pushed: dict[str, DemoPackage]) -> None:
    package = pushed["sklearn"]
    pixels, expected = samples(package)
    client = triton_http.InferenceServerClient(gateway.url.removeprefix("http://"))
    try:
        tensor = triton_http.InferInput("pixels", list(pixels.shape), "FP32")
        tensor.set_data_from_numpy(pixels)
        result = client.infer(package.name, [tensor], headers=headers(gateway.admin_key))
        np.testing.assert_allclose(result.as_numpy("probabilities"), expected["probabilities"], atol=1e-5)
        np.testing.assert_array_equal(result.as_numpy("label"), expected["label"])
        assert client.is_model_ready(package.name, headers=headers(gateway.admin_key))
        metadata = client.get_model_metadata(package.name, headers=headers(gateway.admin_key))
        assert metadata["inputs"][0]["name"] == "pixels"
    finally:
        client.close()


def test_auth_refuses_missing_wrong_scope_and_revoked_keys(
    gateway: GatewayProcess, pushed: dict[str, DemoPackage]
) -> None:
    url = f"{gateway.url}/v1/models/{pushed['sklearn'].name}:predict"
    body = {"instances": [[0.0] * 64]}
    assert httpx.post(url, json=body).status_code == 401
    feedback_only = create_key(gateway, "feedback")
    assert httpx.post(url, json=body, headers=headers(feedback_only)).status_code == 403
    other_model = create_key(gateway, "predict", models=["someone-else"])
    assert httpx.post(url, json=body, headers=headers(other_model)).status_code == 403
    predictor = create_key(gateway, "predict")
    assert httpx.post(url, json=body, headers=headers(predictor)).status_code == 200
    key_id = predictor.split("_")[1]
    revoked = run_cli(gateway, "keys", "revoke", key_id)
    assert revoked.returncode == 0, revoked.stderr
    assert httpx.post(url, json=body, headers=headers(predictor)).status_code == 401


def _batch_count(gateway: GatewayProcess, model: str) -> float:
    text = httpx.get(f"{gateway.url}/metrics").text
    pattern = rf'^mdeploy_batch_rows_count{{model="{re.escape(model)}",version="[^"]+"}} ([0-9.e+]+)$'
    return sum(float(m) for m in re.findall(pattern, text, re.MULTILINE))


async def test_concurrent_requests_share_backend_calls(
    gateway: GatewayProcess, pushed: dict[str, DemoPackage]
) -> None:
    model = pushed["sklearn"].name
    before = _batch_count(gateway, model)
    pixels, _ = samples(pushed["sklearn"])
    async with httpx.AsyncClient(
        base_url=gateway.url, headers=headers(gateway.admin_key), timeout=60
    ) as client:
        responses = await asyncio.gather(
            *(
                client.post(f"/v1/models/{model}:predict", json={"instances": [pixels[i % 16].tolist()]})
                for i in range(200)
            )
        )
    assert {r.status_code for r in responses} == {200}
    calls = _batch_count(gateway, model) - before
    assert 0 < calls < 200, f"200 requests made {calls} backend calls"


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"instances": [[0.0] * 64] * 257}, 413, "rows; the limit is 256"),
        ({"instances": [[0.0] * 64] * 6000}, 413, "over the limit"),
        ({"instances": [[0.0] * 63]}, 400, "shape [1, 63]"),
        ({"instances": [[0.0] * 64, [0.0] * 60]}, 400, "ragged"),
        ({"instances": [["a"] * 64]}, 400, "must be numbers"),
        ({"rows": []}, 400, "'instances'"),
    ],
    ids=["rows", "body bytes", "shape", "ragged", "strings", "no instances"],
)
def test_bounds_and_bad_bodies_get_4xx_and_gateway_keeps_serving(
    gateway: GatewayProcess, pushed: dict[str, DemoPackage], body: object, status: int, message: str
) -> None:
    url = f"{gateway.url}/v1/models/{pushed['sklearn'].name}:predict"
    response = httpx.post(url, json=body, headers=headers(gateway.admin_key))
    assert response.status_code == status, response.text
    assert message in response.json()["error"]
    ok = httpx.post(url, json={"instances": [[0.0] * 64]}, headers=headers(gateway.admin_key))
    assert ok.status_code == 200


def test_unknown_model_is_404_with_a_json_error(
    gateway: GatewayProcess, pushed: dict[str, DemoPackage]
) -> None:
    response = httpx.post(
        f"{gateway.url}/v2/models/nope/infer",
        json={"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]},
        headers=headers(gateway.admin_key),
    )
    assert response.status_code == 404
    assert "nope" in response.json()["error"]


def test_predict_cli_prints_the_answer(gateway: GatewayProcess, pushed: dict[str, DemoPackage]) -> None:
    import json

    name = pushed["sklearn"].name
    result = run_cli(gateway, "predict", name, "--json", json.dumps({"instances": [[0.0] * 64]}), "--labels")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert len(answer["predictions"]) == 1
    assert answer["labels"][0] in [str(d) for d in range(10)]
    bad = run_cli(gateway, "predict", f"{name}:x", "--json", "{}")
    assert bad.returncode == 2
    assert "numeric version" in bad.stderr
