"""The Triton model repository the registry lays out: derived from the database and the store.

::

    <repository>/<model>/config.pbtxt
    <repository>/<model>/labels.txt              (when the package has labels)
    <repository>/<model>/<version>/model.onnx    (+ its external data files, if any)

Only live versions have folders. Version folders are staged in the session folder and
renamed in, files are replaced atomically, so Triton (or a person) reading the repository
never sees half a version. Everything here can be rebuilt from the store, and is, by the
registry's repair pass.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path

from gateway.registry.triton_config import LABELS_FILENAME, config_text, labels_text
from modelpkg import Package
from protos.generated import model_config_pb2 as mc

CONFIG_FILENAME = "config.pbtxt"


class TritonRepository:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def version_dir(self, model: str, version: int) -> Path:
        return self.root / model / str(version)

    def install_version(self, model: str, version: int, package: Package, staging: Path) -> None:
        """Write the version folder in ``staging`` (same file system), then rename it in."""
        staged = staging / f"{model}-{version}"
        staged.mkdir(parents=True)
        package.write_model(staged)
        target = self.version_dir(model, version)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():  # a leftover of an aborted push: not live, safe to replace
            shutil.rmtree(target)
        os.rename(staged, target)

    def has_version(self, model: str, version: int) -> bool:
        return self.version_dir(model, version).is_dir()

    def remove_version(self, model: str, version: int) -> None:
        shutil.rmtree(self.version_dir(model, version), ignore_errors=True)

    def write_config(self, model: str, config: mc.ModelConfig, labels: list[str] | None) -> None:
        folder = self.root / model
        folder.mkdir(parents=True, exist_ok=True)
        if labels is not None:
            _replace_text(folder / LABELS_FILENAME, labels_text(labels))
        else:
            (folder / LABELS_FILENAME).unlink(missing_ok=True)
        _replace_text(folder / CONFIG_FILENAME, config_text(config))

    def remove_config(self, model: str) -> None:
        """Remove the model's config and labels, and its folder once no version folder is left.

        A version folder may belong to another process's push in progress: it stays.
        """
        folder = self.root / model
        for name in (CONFIG_FILENAME, LABELS_FILENAME):
            (folder / name).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            folder.rmdir()  # fails while not empty

    def config_text(self, model: str) -> str | None:
        path = self.root / model / CONFIG_FILENAME
        return path.read_text() if path.is_file() else None

    def layout(self) -> dict[str, set[int]]:
        """The model folders and the version folders inside each."""
        found: dict[str, set[int]] = {}
        for folder in self.root.iterdir():
            if folder.is_dir() and not folder.name.startswith("."):
                found[folder.name] = {
                    int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit()
                }
        return found

    def load_files(self, model: str, versions: list[int]) -> dict[str, bytes]:
        """RepositoryModelLoad's file overrides: ``<version>/<file>`` → bytes, every version."""
        files: dict[str, bytes] = {}
        for version in versions:
            folder = self.version_dir(model, version)
            for path in sorted(folder.iterdir()):
                files[f"{version}/{path.name}"] = path.read_bytes()
        return files


def _replace_text(path: Path, text: str) -> None:
    if path.is_file() and path.read_text() == text:
        return
    # A name of its own: another gateway process may be rewriting the same file.
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)
