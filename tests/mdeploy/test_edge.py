"""`mdeploy edge-config`: what Envoy accepts, what it retries, and how bad input is refused."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from mdeploy.cli import main
from mdeploy.edge import GRPC_CLUSTER, HTTP_CLUSTER, PREDICTION_PATHS
from tests.envoy import envoy_binary


def write_config(tmp_path: Path, capsys: pytest.CaptureFixture[str], *args: str) -> Path:
    path = tmp_path / "envoy.yaml"
    assert main(["edge-config", *args, "-o", str(path)]) == 0, capsys.readouterr().err
    assert f"run: envoy -c {path} --drain-time-s" in capsys.readouterr().out
    return path


def config_of(tmp_path: Path, capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(write_config(tmp_path, capsys, *args).read_text())
    return loaded


@pytest.mark.parametrize(
    "args",
    [
        ["--gateways", "10.0.0.1:8000,10.0.0.2:8000"],
        ["--gateways", "gw-1.internal:8000,[fd00::2]:8000", "--grpc-port-offset", "-1000"],
        ["--gateways", "127.0.0.1:8000", "--no-grpc", "--listen", "[::]:80", "--admin", "[::1]:9901"],
        ["--gateways", ",".join(f"10.0.1.{i}:8000" for i in range(1, 65)), "--retries", "0"],
        ["--gateways", "10.0.0.1:8000", "--unreachable-timeout-s", "2.5"],
        ["--gateways", "10.0.0.1:8000", "--unreachable-timeout-s", "0"],
    ],
    ids=["ips", "names-and-ipv6", "http-only", "64-gateways", "unreachable-2.5s", "unreachable-off"],
)
def test_envoy_itself_accepts_the_configuration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    path = write_config(tmp_path, capsys, *args)
    checked = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path), "--log-level", "error"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "OK" in checked.stdout


def routes(config: dict[str, Any], listener: str) -> list[dict[str, Any]]:
    found = next(item for item in config["static_resources"]["listeners"] if item["name"] == listener)
    manager = found["filter_chains"][0]["filters"][0]["typed_config"]
    listed: list[dict[str, Any]] = manager["route_config"]["virtual_hosts"][0]["routes"]
    return listed


def retried_on(route: dict[str, Any]) -> set[str]:
    return set(route["route"]["retry_policy"]["retry_on"].split(","))


def test_only_predictions_and_reads_are_repeated_once_a_gateway_may_have_seen_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    predictions, reads, others = routes(config_of(tmp_path, capsys, "--gateways", "10.0.0.1:8000"), "http")
    never_delivered = {"connect-failure", "refused-stream"}
    assert predictions["match"]["safe_regex"]["regex"] == PREDICTION_PATHS
    assert retried_on(predictions) == never_delivered | {"reset", "retriable-status-codes"}
    assert predictions["route"]["retry_policy"]["retriable_status_codes"] == [503]
    assert retried_on(reads) == never_delivered | {"reset", "5xx"}
    assert retried_on(others) == never_delivered | {"reset-before-request"}  # uploads, changes, feedback
    for route in (predictions, reads, others):
        policy = route["route"]["retry_policy"]
        assert policy["retry_host_predicate"][0]["name"] == "envoy.retry_host_predicates.previous_hosts"


def test_grpc_inference_is_repeated_but_repository_changes_are_not(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    load, unload, stream, rest = routes(config_of(tmp_path, capsys, "--gateways", "10.0.0.1:8000"), "grpc")
    assert load["match"]["path"] == "/inference.GRPCInferenceService/RepositoryModelLoad"
    assert unload["match"]["path"] == "/inference.GRPCInferenceService/RepositoryModelUnload"
    for change in (load, unload):
        assert retried_on(change) == {"connect-failure", "refused-stream", "reset-before-request"}
    assert "per_try_timeout" not in stream["route"]["retry_policy"]  # a stream may wait long
    for inference in (stream, rest):
        assert {"reset", "unavailable", "cancelled"} <= retried_on(inference)
        assert inference["route"]["max_stream_duration"] == {"grpc_timeout_header_max": "0s"}


def test_grpc_gateways_default_to_the_next_port_of_each_host(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_of(tmp_path, capsys, "--gateways", "10.0.0.1:8000,gw-2:9000")
    clusters = {cluster["name"]: cluster for cluster in config["static_resources"]["clusters"]}
    grpc = clusters[GRPC_CLUSTER]
    endpoints = grpc["load_assignment"]["endpoints"][0]["lb_endpoints"]
    addresses = [e["endpoint"]["address"]["socket_address"] for e in endpoints]
    assert addresses == [{"address": "10.0.0.1", "port_value": 8001}, {"address": "gw-2", "port_value": 9001}]
    assert grpc["type"] == "STRICT_DNS"  # a name: resolved, every address a gateway
    assert grpc["health_checks"][0]["grpc_health_check"] == {"service_name": "inference.GRPCInferenceService"}
    http = clusters[HTTP_CLUSTER]
    assert http["health_checks"][0]["http_health_check"] == {"path": "/v2/health/ready"}


def test_the_retry_budget_covers_the_requests_of_one_lost_gateway(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def budget(gateways: int) -> float:
        hosts = ",".join(f"10.0.0.{i}:8000" for i in range(1, gateways + 1))
        cluster = config_of(tmp_path, capsys, "--gateways", hosts)["static_resources"]["clusters"][0]
        value: float = cluster["circuit_breakers"]["thresholds"][0]["retry_budget"]["budget_percent"]["value"]
        return value

    assert budget(2) > 50
    assert budget(64) == 25


def clusters_of(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {cluster["name"]: cluster for cluster in config["static_resources"]["clusters"]}


@pytest.mark.parametrize(
    ("timeout", "user_timeout_ms", "probes"),
    [(None, 5000, 4), ("2", 2000, 1), ("2.5", 2500, 2), ("30", 30000, 29)],
)
def test_connections_to_a_silent_gateway_host_end_after_the_unreachable_timeout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], timeout: str | None, user_timeout_ms: int, probes: int
) -> None:
    args = ["--gateways", "10.0.0.1:8000"] + (["--unreachable-timeout-s", timeout] if timeout else [])
    for cluster in clusters_of(config_of(tmp_path, capsys, *args)).values():
        # TCP_USER_TIMEOUT (IPPROTO_TCP 6, option 18): sent data unacknowledged this long ends it.
        (option,) = cluster["upstream_bind_config"]["socket_options"]
        assert (option["level"], option["name"], option["int_value"]) == (6, 18, user_timeout_ms)
        assert "source_address" not in cluster["upstream_bind_config"]  # IPv4 and IPv6 gateways alike
        # Probes each second of silence cover a request delivered and waiting for its answer.
        keepalive = cluster["upstream_connection_options"]["tcp_keepalive"]
        assert keepalive == {"keepalive_time": 1, "keepalive_interval": 1, "keepalive_probes": probes}


def test_without_the_unreachable_timeout_upstream_sockets_keep_the_kernel_defaults(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_of(tmp_path, capsys, "--gateways", "10.0.0.1:8000", "--unreachable-timeout-s", "0")
    for cluster in clusters_of(config).values():
        assert "upstream_bind_config" not in cluster
        assert "upstream_connection_options" not in cluster


def test_grpc_upstreams_get_no_http2_pings_that_grpc_servers_punish(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """grpcio allows a ping every 5 minutes while it sends nothing: faster ones during a slow call
    make it close the connection (GOAWAY "too_many_pings"), and the call with it."""
    grpc = clusters_of(config_of(tmp_path, capsys, "--gateways", "10.0.0.1:8000"))[GRPC_CLUSTER]
    options = grpc["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ]
    assert "connection_keepalive" not in options["explicit_http_config"]["http2_protocol_options"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--gateways", ""], "--gateways is empty"),
        (["--gateways", "10.0.0.1"], "'10.0.0.1' is not HOST:PORT"),
        (["--gateways", "10.0.0.1:0"], "the port must be a number from 1 to 65535"),
        (["--gateways", "10.0.0.1:65536"], "the port must be a number from 1 to 65535"),
        (["--gateways", "10.0.0.1:http"], "the port must be a number from 1 to 65535"),
        (["--gateways", "10.0.0.300:8000"], "neither an IP address nor a host name"),
        (["--gateways", "bad_name:8000"], "neither an IP address nor a host name"),
        (["--gateways", "::1:8000"], "write an IPv6 address in brackets"),
        (["--gateways", "a:1,a:1"], "a:1 is listed twice"),
        (["--gateways", ",".join(f"10.0.1.{i}:8000" for i in range(1, 66))], "lists 65 gateways; at most 64"),
        (["--gateways", "a:65535"], "--grpc-port-offset 1 puts the gRPC port of a:65535 at 65536"),
        (["--gateways", "a:1", "--grpc-gateways", "b"], "--grpc-gateways 'b' is not HOST:PORT"),
        (["--gateways", "a:1", "--listen", "0.0.0.0:9901"], "would share a port"),
        (["--gateways", "a:1", "--health-interval-s", "0"], "--health-interval-s 0 is out of range"),
        (["--gateways", "a:1", "--retries", "9"], "--retries 9 is out of range"),
        (["--gateways", "a:1", "--per-try-timeout-s", "400"], "must be below --timeout-s 300"),
        (["--gateways", "a:1", "--timeout-s", "nan"], "--timeout-s nan is out of range"),
        (
            ["--gateways", "a:1", "--unreachable-timeout-s", "1"],
            "--unreachable-timeout-s 1 is out of range: give 2 to 300, or 0 for off",
        ),
        (
            ["--gateways", "a:1", "--unreachable-timeout-s", "301"],
            "--unreachable-timeout-s 301 is out of range",
        ),
        (
            ["--gateways", "a:1", "--unreachable-timeout-s", "-5"],
            "--unreachable-timeout-s -5 is out of range",
        ),
        (
            ["--gateways", "a:1", "--unreachable-timeout-s", "nan"],
            "--unreachable-timeout-s nan is out of range",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert main(["edge-config", *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert message in captured.err


def test_without_an_output_file_the_configuration_goes_to_standard_output(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["edge-config", "--gateways", "10.0.0.1:8000"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("# Envoy edge for mdeploy gateways")
    assert yaml.safe_load(text)["admin"]["address"]["socket_address"] == {
        "address": "127.0.0.1",
        "port_value": 9901,
    }
