"""deploy/kubernetes, rendered by kustomize: valid for the API server, locked down, secrets kept out.

No cluster runs here: these checks are what can be known without one.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import kubernetes_validate
import pytest

from core.errors import InvalidInput
from core.server_token import read_token
from gateway.auth import KeyRecord, KeyStore
from gateway.auth.keys import with_keys
from gateway.settings import GatewaySettings
from tests.deploy.conftest import rendered_target
from tests.deploy.rendering import ROOT, Doc, Rendered, render

# Starts kubectl (kustomize): the e2e tier, like every test that runs a program.
pytestmark = pytest.mark.e2e

# The Kubernetes releases whose OpenAPI schemas the documents must satisfy: an old one still
# run by managed clusters, and the newest kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.30", "1.37")
# Settings that may carry a password (URLs) or are one: only ever from a Secret.
SECRET_VARIABLES = {
    "MDEPLOY_DATABASE_URL",
    "MDEPLOY_SHARED_STATE_URL",
    "MDEPLOY_RATE_LIMIT_STORAGE",
    "MDEPLOY_WEBHOOK_SECRET",
    "POSTGRES_PASSWORD",
}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_document_is_valid_against_the_kubernetes_schemas_strictly(
    rendered: Rendered, version: str
) -> None:
    assert rendered.docs
    for doc in rendered.docs:
        where = f"{rendered.name}: {doc['kind']}/{doc['metadata']['name']} (Kubernetes {version})"
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(part) for part in error.path)
            pytest.fail(f"{where}: {path}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError as error:
            pytest.fail(f"{where}: {error.message}")


def test_everything_but_the_namespace_goes_into_the_mdeploy_namespace(rendered: Rendered) -> None:
    namespace = rendered.one("Namespace", "mdeploy")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for doc in rendered.docs:
        if doc is not namespace:
            assert doc["metadata"].get("namespace") == "mdeploy", doc["metadata"]["name"]


def test_every_pod_runs_as_non_root_without_privileges_on_a_read_only_root(rendered: Rendered) -> None:
    """What the restricted Pod Security Standard asks, and a read-only root filesystem besides."""
    for workload, pod in rendered.pod_templates():
        name = workload["metadata"]["name"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] != 0, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert pod["automountServiceAccountToken"] is False, name
        assert not any(key.startswith("host") for key in pod), name
        assert all("hostPath" not in volume for volume in pod.get("volumes", [])), name
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["capabilities"] == {"drop": ["ALL"]}, name
            assert "privileged" not in context, name


def test_every_container_has_cpu_and_memory_requests_and_limits(rendered: Rendered) -> None:
    for workload, pod in rendered.pod_templates():
        for container in pod["containers"]:
            resources = container["resources"]
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources[bound]), (workload["metadata"]["name"], bound)


def test_no_pod_gets_service_links_among_its_settings(rendered: Rendered) -> None:
    """Service links would add MDEPLOY_SERVER_PORT=tcp://... where the settings read MDEPLOY_*."""
    for workload, pod in rendered.pod_templates():
        assert pod["enableServiceLinks"] is False, workload["metadata"]["name"]


def test_secrets_are_referenced_never_written_into_a_workload_or_config_map(rendered: Rendered) -> None:
    for workload, pod in rendered.pod_templates():
        for container in pod["containers"]:
            for variable in container.get("env", []):
                if variable["name"] in SECRET_VARIABLES:
                    assert "secretKeyRef" in variable["valueFrom"], (workload["metadata"]["name"], variable)
    for config in rendered.all("ConfigMap"):
        assert not SECRET_VARIABLES & set(config["data"]), config["metadata"]["name"]
        assert not any(re.search(r"://[^/]*@", value) for value in config["data"].values())


def test_every_secret_and_config_map_a_pod_names_is_rendered_with_the_keys_it_uses(
    rendered: Rendered,
) -> None:
    """Names are kustomize's hashed ones, so a typo or a missed rename shows here, not in a cluster."""
    names = {(doc["kind"], doc["metadata"]["name"]): doc for doc in rendered.docs}
    for _, pod in rendered.pod_templates():
        for container in pod["containers"]:
            for source in container.get("envFrom", []):
                assert ("ConfigMap", source["configMapRef"]["name"]) in names
            for variable in container.get("env", []):
                if reference := variable.get("valueFrom", {}).get("secretKeyRef"):
                    assert reference["key"] in names["Secret", reference["name"]]["data"], reference
        for volume in pod.get("volumes", []):
            sources = [s["secret"] for s in volume.get("projected", {}).get("sources", []) if "secret" in s]
            if "secret" in volume:
                sources.append({"name": volume["secret"]["secretName"], **volume["secret"]})
            for source in sources:
                data = names["Secret", source["name"]]["data"]
                assert {item["key"] for item in source.get("items", [])} <= set(data), source


def test_the_placeholder_secrets_are_refused_by_the_programs_that_read_them(tmp_path: Path) -> None:
    """Applied unedited, the base starts nothing that accepts a published key or token."""
    base = rendered_target("base")
    placeholder = base.secret_value("mdeploy-admin-key", "admin-key")
    with pytest.raises(InvalidInput, match="malformed API key"):
        with_keys(GatewaySettings(data_dir=tmp_path), lambda keys: keys.register(placeholder, ["admin"]))
    token_file = tmp_path / "server-token"
    token_file.write_text(base.secret_value("mdeploy-server-token", "server-token"))
    with pytest.raises(ValueError, match="must hold a token"):
        read_token(token_file)
    assert "REPLACE-ME" in base.secret_value("mdeploy-state", "database-url")


def test_an_overlay_of_ones_own_replaces_every_placeholder_as_the_readme_shows(tmp_path: Path) -> None:
    values = {
        "admin-key": f"mdk_0123456789abcdef_{'a' * 43}",
        "server-token": "ab" * 32,
        "database-url": "postgresql://mdeploy:pw@db.internal:5432/mdeploy",
        "redis-url": "redis://redis.internal:6379/0",
    }
    (tmp_path / "secrets").mkdir()
    for name, value in values.items():
        (tmp_path / "secrets" / name).write_text(value)
    readme = (ROOT / "README.md").read_text()
    overlay = readme.split("cat > kustomization.yaml <<'EOF'\n", 1)[1].split("\nEOF\n", 1)[0]
    # kustomize takes relative paths only: from here to this checkout instead of ../mdeploy.
    checkout = os.path.relpath(ROOT, tmp_path)
    (tmp_path / "kustomization.yaml").write_text(overlay.replace("../mdeploy/", f"{checkout}/"))
    mine = Rendered("mine", render(tmp_path))
    secrets = {
        key: mine.secret_value(secret["metadata"]["name"], key)
        for secret in mine.all("Secret")
        for key in secret["data"]
    }
    assert secrets == values
    assert mine.container("mdeploy-gateway", "gateway")["image"] == "registry.example.com/mdeploy:0.1.0"
    assert {e["name"] for e in mine.container("mdeploy-gateway", "gateway")["env"]} >= SECRET_VARIABLES - {
        "MDEPLOY_WEBHOOK_SECRET",
        "POSTGRES_PASSWORD",
    }


def test_the_readmes_admin_key_recipe_makes_a_key_the_gateway_registers(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    program = readme.split("python3 -c '", 1)[1].split("' > secrets/admin-key", 1)[0]
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=True
    )
    key = done.stdout.strip()

    async def register_and_verify(keys: KeyStore) -> KeyRecord:
        await keys.register(key, ["admin"])
        answer = keys.verify(key)
        return answer if isinstance(answer, KeyRecord) else await answer

    assert with_keys(GatewaySettings(data_dir=tmp_path), register_and_verify).scopes == {"admin"}


def test_images_carry_the_package_version(rendered: Rendered) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    for workload, pod in rendered.pod_templates():
        for container in pod["containers"]:
            if container["image"].startswith("mdeploy"):
                assert container["image"] in (f"mdeploy:{version}", f"mdeploy:{version}-gpu"), workload


def test_services_select_the_pods_and_name_their_ports(rendered: Rendered) -> None:
    for service in rendered.all("Service"):
        selector = service["spec"]["selector"]
        pods = [pod for workload, pod in rendered.pod_templates() if _selected(workload, selector)]
        assert pods, service["metadata"]["name"]
        ports = {p["name"] for pod in pods for c in pod["containers"] for p in c.get("ports", [])}
        assert {port["targetPort"] for port in service["spec"]["ports"]} <= ports


def _selected(workload: Doc, selector: dict[str, str]) -> bool:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return selector.items() <= labels.items()
