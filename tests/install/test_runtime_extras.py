"""Each runtime extra resolves to exactly one onnxruntime wheel, and the core to none.

pip resolves the project against PyPI as a user's install would (``--dry-run --report``: the
resolution is written out and nothing is installed; wheels with published metadata are not
downloaded). Both wheels provide the ``onnxruntime`` module, so a resolution holding both would
leave whichever unpacked last.
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

# Starts real processes (servers, gateways, redis, pip or the CLI): the e2e tier.
pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
RUNTIME_WHEELS = {"onnxruntime", "onnxruntime-gpu"}
# What `make setup` installs besides the runtime.
MAKE_EXTRAS = "dev,tensorflow,loadtest"


def _normalized(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def resolve(requirement: str, report: Path) -> dict[str, str]:
    """Distribution name -> version, as pip would install ``requirement`` into an empty venv."""
    command = [
        sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
        "--disable-pip-version-check", "--report", str(report), requirement,
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    installs = json.loads(report.read_text())["install"]
    return {_normalized(item["metadata"]["name"]): item["metadata"]["version"] for item in installs}


@pytest.fixture(scope="module")
def resolutions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str]]:
    folder = tmp_path_factory.mktemp("pip-reports")
    extras = {
        "core": ".",
        "cpu": ".[cpu]",
        "gpu": ".[gpu]",
        "make": f".[{MAKE_EXTRAS},cpu]",
        "make GPU=1": f".[{MAKE_EXTRAS},gpu]",
    }
    with ThreadPoolExecutor(len(extras)) as pool:
        futures = {
            key: pool.submit(resolve, requirement, folder / f"{i}.json")
            for i, (key, requirement) in enumerate(extras.items())
        }
        return {key: future.result() for key, future in futures.items()}


def runtimes(resolution: dict[str, str]) -> set[str]:
    return RUNTIME_WHEELS & set(resolution)


def test_core_install_brings_no_runtime(resolutions: dict[str, dict[str, str]]) -> None:
    assert runtimes(resolutions["core"]) == set()
    assert "mdeploy" in resolutions["core"]


@pytest.mark.parametrize(("extra", "wheel"), [("cpu", "onnxruntime"), ("make", "onnxruntime")])
def test_cpu_extra_brings_the_cpu_wheel_alone(
    resolutions: dict[str, dict[str, str]], extra: str, wheel: str
) -> None:
    assert runtimes(resolutions[extra]) == {wheel}
    assert not [name for name in resolutions[extra] if name.startswith("nvidia-")]


@pytest.mark.parametrize("extra", ["gpu", "make GPU=1"])
def test_gpu_extra_brings_the_cuda_13_wheel_alone_with_its_libraries(
    resolutions: dict[str, dict[str, str]], extra: str
) -> None:
    resolution = resolutions[extra]
    assert runtimes(resolution) == {"onnxruntime-gpu"}
    assert resolution["onnxruntime-gpu"].startswith("1.31.")  # the CUDA 13 build the README names
    # What its CUDA provider loads: cuBLAS, the CUDA runtime and cuDNN 9 for CUDA 13.
    for library in ("nvidia-cublas", "nvidia-cuda-runtime", "nvidia-cudnn-cu13"):
        assert library in resolution, f"{library} missing from the gpu extra's resolution"
    assert resolution["nvidia-cublas"].startswith("13.")
    assert resolution["nvidia-cudnn-cu13"].startswith("9.")
