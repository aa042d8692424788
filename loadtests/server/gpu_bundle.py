"""Bring what ``gpu_check.sh`` needs to a GPU host that reaches no package registry.

Run here, where PyPI is reachable: ``python -m loadtests.server.gpu_bundle [--out .gpu-bundle]``.

It downloads, for the host's Python 3.12 on x86-64 Linux:

* ``wheels/``: the Python packages mdeploy-server and ``tritonclient.grpc`` need that the host
  lacks, at the versions installed in this environment (the ones the tests passed with);
* the onnxruntime-gpu wheel, cut into ``ort-part-NN`` files of at most ``--part-mib`` MiB, since
  one upload to the host carries at most 64 MiB, with ``ort.sha256`` to check the joined file.

``loadtests/README.md`` ("gpu_check") gives the calls that move the parts and run the check.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from loadtests.common.paths import ROOT

ORT_GPU = "onnxruntime-gpu==1.31.1"
# Imported by mdeploy-server or tritonclient.grpc and absent from the host (or there at a
# version the generated stubs cannot use: grpcio and protobuf must be at least what made them).
HOST_LACKS = (
    "grpcio",
    "grpcio-health-checking",
    "protobuf",
    "pydantic",
    "pydantic-core",
    "pydantic-settings",
    "python-dotenv",
    "typing-inspection",
    "annotated-types",
    "typing-extensions",
    "tritonclient",
    "python-rapidjson",
)
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
)


def download(requirements: list[str], folder: Path) -> None:
    platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    command = [
        sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
        "--python-version", "3.12", "--implementation", "cp", *platforms, "-d", str(folder), *requirements,
    ]  # fmt: skip
    subprocess.run(command, check=True)


def split(wheel: Path, folder: Path, part_bytes: int) -> list[Path]:
    """Cut ``wheel`` into numbered parts; ``cat ort-part-*`` joins them in order."""
    parts: list[Path] = []
    with wheel.open("rb") as source:
        while chunk := source.read(part_bytes):
            part = folder / f"ort-part-{len(parts):02d}"
            part.write_bytes(chunk)
            parts.append(part)
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    (folder / "ort.sha256").write_text(f"{digest}  {wheel.name}\n")
    return parts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpu_bundle", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / ".gpu-bundle", help="folder (default .gpu-bundle)")
    parser.add_argument("--part-mib", type=int, default=50, help="largest part of the wheel (default 50 MiB)")
    args = parser.parse_args(argv)
    out: Path = args.out
    shutil.rmtree(out, ignore_errors=True)
    (out / "wheels").mkdir(parents=True)
    download([f"{name}=={version(name)}" for name in HOST_LACKS], out / "wheels")
    download([ORT_GPU], out / "ort")
    (wheel,) = (out / "ort").glob("*.whl")
    parts = split(wheel, out, args.part_mib * 1024 * 1024)
    shutil.rmtree(out / "ort")
    size = sum(p.stat().st_size for p in (out / "wheels").iterdir()) / 2**20
    print(f"{out}/wheels: {len(list((out / 'wheels').iterdir()))} wheels, {size:.1f} MiB")
    print(f"{wheel.name} in {len(parts)} parts under {out} (join: cat ort-part-* > {wheel.name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
