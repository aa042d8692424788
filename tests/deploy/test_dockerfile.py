"""deploy/Dockerfile, read by BuildKit's own parser (the `dockerfile` package) and linted by hadolint.

No container engine runs here, so the image is not built: these are the properties the file
itself must have (multi-stage, non-root, no TensorFlow, the package's folders, the ports).
"""

from __future__ import annotations

import re
import subprocess
import tomllib
from typing import Any

import dockerfile
import pytest
import yaml

from tests.deploy.rendering import KUBERNETES, ROOT, tool

DOCKERFILE = ROOT / "deploy" / "Dockerfile"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
FRAMEWORKS = ("tensorflow", "tf2onnx", "keras")


def stages() -> list[list[Any]]:
    """The Dockerfile's instructions, one list per stage (each starting with its FROM)."""
    found: list[list[Any]] = []
    for command in dockerfile.parse_file(str(DOCKERFILE)):
        if command.cmd == "FROM":
            found.append([])
        if found:
            found[-1].append(command)
    return found


def instructions(stage: list[Any], name: str) -> list[Any]:
    return [command for command in stage if command.cmd == name]


def pip_installs(stage: list[Any]) -> list[str]:
    """The arguments of each ``pip install`` in the stage's RUN instructions."""
    runs = " && ".join(" ".join(command.value) for command in instructions(stage, "RUN"))
    return [m.group(1).strip() for m in re.finditer(r"pip install ([^&;|]*)", runs)]


def test_the_image_is_built_in_stages_and_the_last_copies_only_the_builders_environment() -> None:
    builder, *_, final = stages()
    assert len(stages()) >= 2
    assert builder[0].value[-2:] == ("AS", "builder")
    copies = instructions(final, "COPY")
    assert [(c.flags, c.value) for c in copies] == [(("--from=builder",), ("/opt/mdeploy", "/opt/mdeploy"))]


def test_the_image_runs_as_the_non_root_user_the_manifests_name() -> None:
    final = stages()[-1]
    user = instructions(final, "USER")[-1].value[0]
    uid, _, gid = user.partition(":")
    # Numeric: the kubelet can check runAsNonRoot only against a number.
    assert uid.isdigit(), user
    assert int(uid) != 0
    assert gid.isdigit(), user
    for workload in ("gateway-deployment.yaml", "server-deployment.yaml"):
        pod = yaml.safe_load((KUBERNETES / "base" / workload).read_text())["spec"]["template"]["spec"]
        context = pod["securityContext"]
        assert (str(context["runAsUser"]), str(context["runAsGroup"])) == (uid, gid), workload


def test_the_builder_installs_one_runtime_extra_and_never_tensorflow() -> None:
    builder = stages()[0]
    [runtime] = [c.value[0] for c in instructions(builder, "ARG") if c.value[0].startswith("RUNTIME=")]
    assert runtime == "RUNTIME=cpu"
    assert pip_installs(builder) == ['--no-cache-dir ".[${RUNTIME}]"']
    for stage in stages():
        for arguments in pip_installs(stage):
            assert not any(name in arguments for name in FRAMEWORKS), arguments


@pytest.mark.parametrize("runtime", ["cpu", "gpu"])
def test_each_runtime_extra_brings_onnxruntime_and_no_framework(runtime: str) -> None:
    requirements = [
        *PYPROJECT["project"]["dependencies"],
        *PYPROJECT["project"]["optional-dependencies"][runtime],
    ]
    assert any(r.startswith("onnxruntime") for r in requirements)
    assert not [r for r in requirements if any(name in r for name in FRAMEWORKS)]


def test_the_builder_copies_every_package_folder_and_the_build_context_lets_them_through() -> None:
    copied = {path for c in instructions(stages()[0], "COPY") for path in c.value[:-1]}
    packages = {name.rstrip("*") for name in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert copied == packages | {"pyproject.toml", "README.md"}
    ignore = (ROOT / "deploy" / "Dockerfile.dockerignore").read_text().splitlines()
    assert ignore.index("**") < min(ignore.index(f"!{path}") for path in copied)


def test_the_image_exposes_the_http_and_grpc_ports() -> None:
    [expose] = instructions(stages()[-1], "EXPOSE")
    assert set(expose.value) == {"8000", "8001"}


@pytest.mark.e2e
def test_hadolint_finds_nothing_to_fix() -> None:
    done = subprocess.run(
        [tool("hadolint"), str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
