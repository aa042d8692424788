"""The gateway and inference-server workloads of deploy/kubernetes: the programs' own flags and
settings, probes on the right paths and ports, a drain that fits the grace period, GPU placement."""

from __future__ import annotations

import shlex
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from gateway.app import create_app
from gateway.backend_address import parse_backend
from gateway.settings import GatewaySettings
from mdeploy.cli import build_parser as gateway_parser
from servers.cli import build_parser as server_parser
from servers.cli import settings_from
from servers.settings import ServerSettings
from tests.deploy.rendering import Doc, Rendered
from tests.gateway.asgi import lifespan

# Starts kubectl (kustomize): the e2e tier, like every test that runs a program.
pytestmark = pytest.mark.e2e

GATEWAY = ("mdeploy-gateway", "gateway")
SERVER = ("mdeploy-server", "server")


def gateway_settings(rendered: Rendered, monkeypatch: pytest.MonkeyPatch) -> GatewaySettings:
    """What the gateway container would run with (its flags, its ConfigMap; Secrets left out)."""
    container = rendered.container(*GATEWAY)
    assert container["command"] == ["mdeploy"]
    for name, value in rendered.plain_environment(container).items():
        monkeypatch.setenv(name, value)
    args = gateway_parser().parse_args(container["args"])
    flags = {k: v for k, v in vars(args).items() if k in GatewaySettings.model_fields and v is not None}
    return GatewaySettings(**flags)


def server_settings(rendered: Rendered, monkeypatch: pytest.MonkeyPatch) -> ServerSettings:
    container = rendered.container(*SERVER)
    assert container["command"] == ["mdeploy-server"]
    for name, value in rendered.plain_environment(container).items():
        monkeypatch.setenv(name, value)
    return settings_from(server_parser().parse_args(container["args"]))


def mounted_file(rendered: Rendered, deployment: str, container: str, path: Path) -> tuple[str, str]:
    """(Secret, key) that ``path`` in the container comes from."""
    pod = rendered.one("Deployment", deployment)["spec"]["template"]["spec"]
    for mount in rendered.container(deployment, container)["volumeMounts"]:
        if path.parent != Path(mount["mountPath"]):
            continue
        volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
        sources = [s["secret"] for s in volume.get("projected", {}).get("sources", []) if "secret" in s]
        if "secret" in volume:
            sources.append({"name": volume["secret"]["secretName"], **volume["secret"]})
        for source in sources:
            # Without items, each key of the Secret is a file of that name.
            every_key = [{"key": k, "path": k} for k in rendered.one("Secret", source["name"])["data"]]
            for item in source.get("items") or every_key:
                if item["path"] == path.name:
                    return source["name"], item["key"]
    raise AssertionError(f"{path} is not a file of a mounted Secret in {deployment}")


def test_every_gateway_setting_the_manifests_give_is_a_real_setting(rendered: Rendered) -> None:
    """Unknown MDEPLOY_* variables are ignored by the gateway: a misspelt one would do nothing."""
    container = rendered.container(*GATEWAY)
    names = set(rendered.plain_environment(container)) | {e["name"] for e in container["env"]}
    fields = {name.removeprefix("MDEPLOY_").lower() for name in names}
    assert fields <= set(GatewaySettings.model_fields)


def test_every_server_setting_the_manifests_give_is_a_real_setting(rendered: Rendered) -> None:
    names = rendered.plain_environment(rendered.container(*SERVER))
    fields = {name.removeprefix("MDEPLOY_SERVER_").lower() for name in names}
    assert fields <= set(ServerSettings.model_fields)


def test_the_gateway_listens_on_all_addresses_and_calls_the_server_service_with_the_token(
    rendered: Rendered, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = gateway_settings(rendered, monkeypatch)
    assert (settings.host, settings.port, settings.grpc_port) == ("0.0.0.0", 8000, 8001)
    [backend] = [parse_backend(b) for b in settings.backends]
    server_service = rendered.one("Service", "mdeploy-server")
    assert backend.address == f"mdeploy-server:{server_service['spec']['ports'][0]['port']}"
    assert backend.token_file is not None
    assert mounted_file(rendered, *GATEWAY, backend.token_file) == (
        rendered.one("Secret", "mdeploy-server-token")["metadata"]["name"],
        "server-token",
    )
    assert settings.admin_key_file is not None
    assert mounted_file(rendered, *GATEWAY, settings.admin_key_file)[1] == "admin-key"


def test_the_gateway_data_folder_is_a_writable_volume(
    rendered: Rendered, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = gateway_settings(rendered, monkeypatch)
    mounts = {m["mountPath"]: m for m in rendered.container(*GATEWAY)["volumeMounts"]}
    assert not mounts[str(settings.data_dir)].get("readOnly", False)
    assert "/tmp" in mounts


@pytest.fixture
async def gateway_http(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(GatewaySettings(data_dir=tmp_path, grpc_port=0))
    async with (
        lifespan(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client,
    ):
        yield client


async def test_the_gateway_probes_ask_its_health_routes_on_its_http_port_without_a_key(
    rendered: Rendered, gateway_http: httpx.AsyncClient
) -> None:
    container = rendered.container(*GATEWAY)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    probes = {kind: container[f"{kind}Probe"]["httpGet"] for kind in ("startup", "readiness", "liveness")}
    assert {kind: probe["path"] for kind, probe in probes.items()} == {
        "startup": "/v2/health/live",
        "readiness": "/v2/health/ready",
        "liveness": "/v2/health/live",
    }
    assert {ports[probe["port"]] for probe in probes.values()} == {8000}
    # Live without a key; not ready while no inference server answers (none here).
    assert (await gateway_http.get(probes["liveness"]["path"])).status_code == 200
    assert (await gateway_http.get(probes["readiness"]["path"])).status_code == 503


def test_the_server_probes_are_grpc_health_checks_on_its_port(
    rendered: Rendered, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = server_settings(rendered, monkeypatch)
    container = rendered.container(*SERVER)
    for kind in ("startup", "readiness", "liveness"):
        assert container[f"{kind}Probe"]["grpc"] == {"port": settings.grpc_port}, kind
    assert settings.grpc_port == 8001
    # The kubelet sends no token: the server must answer health checks without one.
    assert settings.allow_unauthenticated_health


def test_the_server_listens_on_all_addresses_closed_by_the_mounted_token(
    rendered: Rendered, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = server_settings(rendered, monkeypatch)
    assert settings.grpc_address == "0.0.0.0"
    assert settings.model_control_mode == "explicit"
    assert settings.auth_token_file is not None
    secret, key = mounted_file(rendered, *SERVER, settings.auth_token_file)
    assert (secret, key) == (
        rendered.one("Secret", "mdeploy-server-token")["metadata"]["name"],
        "server-token",
    )
    mounts = {m["mountPath"] for m in rendered.container(*SERVER)["volumeMounts"]}
    assert str(settings.work_dir) in mounts


def sleep_seconds(container: Doc) -> int:
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep", shlex.join(command)
    return int(command[1])


def test_the_gateway_stops_after_a_pre_stop_pause_and_drains_within_the_grace_period(
    rendered: Rendered, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = gateway_settings(rendered, monkeypatch)
    pause = sleep_seconds(rendered.container(*GATEWAY))
    grace = rendered.one("Deployment", "mdeploy-gateway")["spec"]["template"]["spec"]
    assert pause >= 5  # endpoints and load balancers take seconds to drop a terminating pod
    assert grace["terminationGracePeriodSeconds"] > pause + settings.shutdown_grace_s


def test_the_server_drains_within_its_grace_period(
    rendered: Rendered, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = server_settings(rendered, monkeypatch)
    pause = sleep_seconds(rendered.container(*SERVER))
    grace = rendered.one("Deployment", "mdeploy-server")["spec"]["template"]["spec"]
    assert grace["terminationGracePeriodSeconds"] > pause + settings.exit_timeout_secs


def test_gateways_have_a_disruption_budget_and_a_cpu_autoscaler(rendered: Rendered) -> None:
    deployment = rendered.one("Deployment", "mdeploy-gateway")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    budget = rendered.one("PodDisruptionBudget", "mdeploy-gateway")["spec"]
    assert budget["selector"]["matchLabels"].items() <= pod_labels.items()
    assert budget["maxUnavailable"] == 1
    scaler = rendered.one("HorizontalPodAutoscaler", "mdeploy-gateway")
    assert scaler["apiVersion"] == "autoscaling/v2"
    target = scaler["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "mdeploy-gateway")
    assert scaler["spec"]["minReplicas"] >= 2  # one can be disrupted while another serves
    [metric] = scaler["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    # The autoscaler owns the count; a replicas field would reset it on every apply.
    assert "replicas" not in deployment["spec"]
    container = rendered.container(*GATEWAY)
    assert container["resources"]["requests"]["cpu"]  # utilisation is measured against it


def test_only_gateways_may_reach_the_inference_servers(rendered: Rendered) -> None:
    policy = rendered.one("NetworkPolicy", "mdeploy-server")["spec"]
    gateway_labels = rendered.one("Deployment", "mdeploy-gateway")["spec"]["template"]["metadata"]["labels"]
    server_labels = rendered.one("Deployment", "mdeploy-server")["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= server_labels.items()
    [rule] = policy["ingress"]
    [source] = rule["from"]
    assert source["podSelector"]["matchLabels"].items() <= gateway_labels.items()
    assert [port["port"] for port in rule["ports"]] == [8001]


def test_the_gateway_services_offer_http_8000_and_grpc_8001(rendered: Rendered) -> None:
    service = rendered.one("Service", "mdeploy-gateway")
    assert {(p["name"], p["port"]) for p in service["spec"]["ports"]} == {("http", 8000), ("grpc", 8001)}


def test_the_gpu_overlay_puts_the_server_on_a_gpu_with_the_gpu_image(
    gpu: Rendered, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = gpu.container(*SERVER)
    for bound in ("requests", "limits"):
        assert server["resources"][bound]["nvidia.com/gpu"] == 1, bound
    assert server["image"].endswith("-gpu")
    assert server_settings(gpu, monkeypatch).device == "cuda:0"
    pod = gpu.one("Deployment", "mdeploy-server")["spec"]["template"]["spec"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["nodeSelector"]
    # The gateway runs no model: it keeps the CPU image and asks for no GPU.
    gateway = gpu.container(*GATEWAY)
    assert not gateway["image"].endswith("-gpu")
    assert "nvidia.com/gpu" not in gateway["resources"]["limits"]


def test_the_cpu_overlay_asks_for_no_gpu_and_never_looks_for_cuda(
    cpu: Rendered, monkeypatch: pytest.MonkeyPatch
) -> None:
    for _, pod in cpu.pod_templates():
        for container in pod["containers"]:
            assert not container["image"].endswith("-gpu")
            assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert server_settings(cpu, monkeypatch).device == "cpu"


def test_the_try_overlay_points_the_gateways_at_its_own_postgres_and_redis(trial: Rendered) -> None:
    for variable, key, service in (
        ("MDEPLOY_DATABASE_URL", "database-url", "postgres"),
        ("MDEPLOY_SHARED_STATE_URL", "redis-url", "redis"),
    ):
        [reference] = [
            e["valueFrom"]["secretKeyRef"] for e in trial.container(*GATEWAY)["env"] if e["name"] == variable
        ]
        url = urlsplit(trial.secret_value(reference["name"], reference["key"]))
        assert reference["key"] == key
        assert url.hostname == service
        assert url.port in [p["port"] for p in trial.one("Service", service)["spec"]["ports"]]
        assert trial.one("StatefulSet", service)["spec"]["replicas"] == 1
