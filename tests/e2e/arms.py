"""A tiny model with interchangeable versions for routing tests, and a client for one gateway.

Versions ``a`` and ``b`` answer ``y = x`` (two packages, two digests). Version ``faulty`` has the
same signature but fails inside onnxruntime (a runtime error, so a 500) for any request whose
largest value is 10 or more: a candidate that fails a chosen share of real requests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
from onnx import TensorProto, helper

from modelpkg.builder import build

MODEL = "arms"
GOOD = [1.0, 2.0]
BAD = [50.0, 2.0]  # breaks the faulty version only


def arm_model(faulty: bool) -> onnx.ModelProto:
    def const(name: str, values: list[int]) -> onnx.NodeProto:
        return helper.make_node(
            "Constant", [], [name], value=helper.make_tensor(name, TensorProto.INT64, [len(values)], values)
        )

    nodes = [const("minus1", [-1]), const("two", [2])]
    if faulty:  # width 3 instead of 2 when max(x) >= 10: the Reshape fails at run time
        nodes += [
            helper.make_node(
                "Constant", [], ["ten"], value=helper.make_tensor("ten", TensorProto.FLOAT, [], [10.0])
            ),
            helper.make_node("ReduceMax", ["x"], ["top"], keepdims=0),
            helper.make_node("GreaterOrEqual", ["top", "ten"], ["bad"]),
            helper.make_node("Cast", ["bad"], ["extra"], to=TensorProto.INT64),
            helper.make_node("Add", ["two", "extra"], ["width"]),
        ]
    else:
        nodes.append(helper.make_node("Identity", ["two"], ["width"]))
    nodes += [
        helper.make_node("Concat", ["minus1", "width"], ["shape"], axis=0),
        helper.make_node("Reshape", ["x", "shape"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        MODEL,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def build_arm_packages(directory: Path) -> dict[str, Path]:
    """arms packages ``a``, ``b`` and ``faulty``, in the order they should be pushed."""
    samples = {"x": np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)}
    packages = {}
    for arm in ("a", "b", "faulty"):
        target = directory / f"arms-{arm}.pkg"
        build(
            arm_model(arm == "faulty"),
            target,
            name=MODEL,
            samples=samples,
            description=f"arm {arm}",
            code_dir=None,
        )
        packages[arm] = target
    return packages


class GatewayClient:
    """A predict+feedback key and the admin key, on one keep-alive connection."""

    def __init__(self, url: str, key: str, admin_key: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=60)
        self.user = {"Authorization": f"Bearer {key}"}
        self.admin_headers = {"Authorization": f"Bearer {admin_key}"}

    def close(self) -> None:
        self.http.close()

    def predict(
        self, row: list[float] = GOOD, routing_key: str | None = None, version: str | None = None
    ) -> httpx.Response:
        path = f"/v1/models/{MODEL}" + (f"/versions/{version}" if version else "") + ":predict"
        headers = {**self.user, **({"X-Routing-Key": routing_key} if routing_key else {})}
        return self.http.post(path, json={"instances": [row]}, headers=headers)

    def feedback(self, request_id: str, reward: float) -> httpx.Response:
        body = {"request_id": request_id, "reward": reward}
        return self.http.post(f"/v1/models/{MODEL}/feedback", json=body, headers=self.user)

    def admin(self, method: str, action: str = "", body: dict[str, Any] | None = None) -> dict[str, Any]:
        path = f"/v1/admin/deployments/{MODEL}" + (f"/{action}" if action else "")
        response = self.http.request(method, path, json=body, headers=self.admin_headers)
        assert response.status_code == 200, response.text
        document: dict[str, Any] = response.json()
        return document

    def rollout(self, policy: dict[str, Any], guard: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.admin("PUT", body={"policy": policy, "guard": guard or {}, "reason": "test"})

    def status(self) -> dict[str, Any]:
        return self.admin("GET")

    def metrics(self) -> str:
        return self.http.get("/metrics").text
