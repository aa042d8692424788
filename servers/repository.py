"""The models a server holds: loaded from a Triton-layout folder or received over the wire.

A (re)load builds every selected version completely before it replaces what was served, and
the replaced versions drain their queues before their sessions are freed: requests to loaded
versions are never interrupted, and a version that fails to load never replaces a good one.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path, PurePosixPath

from core.errors import Conflict, InvalidInput, MdeployError, ModelLoadError, NotFound, Unavailable
from protos.generated import model_config_pb2 as mc
from servers import config as model_config
from servers.model_version import ModelVersion, RuntimeOptions
from servers.settings import ModelControlMode, ServerSettings

log = logging.getLogger(__name__)

CONFIG_FILE = "config.pbtxt"


class ModelState(StrEnum):
    READY = "READY"
    LOADING = "LOADING"
    UNLOADING = "UNLOADING"
    UNAVAILABLE = "UNAVAILABLE"


@dataclass
class LoadedModel:
    name: str
    config: mc.ModelConfig
    versions: dict[int, ModelVersion]
    files_dir: Path | None = None  # private copy of files received over the wire

    def latest(self) -> ModelVersion:
        return self.versions[max(self.versions)]


@dataclass(frozen=True)
class IndexEntry:
    name: str
    version: str
    state: ModelState
    reason: str = ""


@dataclass
class _Status:
    state: ModelState
    reason: str = ""


@dataclass
class ModelRepository:
    settings: ServerSettings
    _models: dict[str, LoadedModel] = field(default_factory=dict)
    _status: dict[str, _Status] = field(default_factory=dict)
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    _retiring: set[asyncio.Task[None]] = field(default_factory=set)
    _work_dir: Path | None = None

    @property
    def options(self) -> RuntimeOptions:
        s = self.settings
        return RuntimeOptions(
            s.device,
            s.intra_op_threads,
            s.inter_op_threads,
            s.default_max_batch_size,
            s.default_max_queue_size,
            s.allow_spinning,
            s.inline_batch_us,
            s.gpu_default_max_batch_size,
            s.execution_provider,
            s.tensorrt_engine_cache,
        )

    @property
    def root(self) -> Path | None:
        return self.settings.model_repository

    # ---- start and stop ----

    async def start(self) -> None:
        """Load what the control mode says to load at start; failures are logged and indexed."""
        names = self.repository_models()
        if self.settings.model_control_mode is ModelControlMode.EXPLICIT:
            wanted = self.settings.load_models
            names = names if "*" in wanted else list(wanted)
        for name in names:
            try:
                await self.load(name)
            except MdeployError as error:
                log.error("model %s failed to load: %s", name, error.message)

    async def close(self) -> None:
        for name in list(self._models):
            await self._retire(self._models.pop(name))
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)
        if self._work_dir is not None:
            shutil.rmtree(self._work_dir, ignore_errors=True)

    # ---- lookup ----

    def repository_models(self) -> list[str]:
        """Model folders in the repository (any folder that is not hidden)."""
        if self.root is None or not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def model(self, name: str) -> LoadedModel:
        served = self._models.get(name)
        if served is None:
            status = self._status.get(name)
            if status is not None and status.state is ModelState.LOADING:
                raise Unavailable(f"model '{name}' is loading; retry shortly")
            reason = f" ({status.reason})" if status is not None and status.reason else ""
            raise NotFound(f"model '{name}' is not loaded{reason}")
        return served

    def version(self, name: str, version: str) -> ModelVersion:
        """The version asked for, or the highest loaded one when ``version`` is empty."""
        served = self.model(name)
        if not version:
            return served.latest()
        # ASCII digits only: str.isdigit() also accepts '²', which int() refuses, as it refuses
        # more than 4300 digits.
        number = int(version) if version.isascii() and version.isdigit() and len(version) < 20 else None
        if number is None or number not in served.versions:
            loaded = ", ".join(str(v) for v in sorted(served.versions))
            raise NotFound(f"model '{name}' has no loaded version {version!r} (loaded: {loaded})")
        return served.versions[number]

    def loaded(self) -> list[LoadedModel]:
        return [self._models[name] for name in sorted(self._models)]

    def index(self, ready_only: bool) -> list[IndexEntry]:
        entries: list[IndexEntry] = []
        for name in sorted(set(self.repository_models()) | set(self._models) | set(self._status)):
            served = self._models.get(name)
            if served is not None:
                entries.extend(IndexEntry(name, str(v), ModelState.READY) for v in sorted(served.versions))
                continue
            status = self._status.get(name, _Status(ModelState.UNAVAILABLE, "unloaded"))
            if not ready_only:
                entries.append(IndexEntry(name, "", status.state, status.reason))
        return entries

    # ---- load and unload ----

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    def check_control(self) -> None:
        if self.settings.model_control_mode is not ModelControlMode.EXPLICIT:
            raise Conflict(
                "model control mode is 'none': start the server with --model-control-mode explicit "
                "to load and unload models"
            )

    async def load(
        self, name: str, config_json: str | None = None, files: dict[str, bytes] | None = None
    ) -> None:
        """(Re)load ``name`` from the repository, or from ``files`` (``<version>/<path>``: bytes)."""
        _check_model_name(name)
        async with self._lock(name):
            self._status[name] = _Status(ModelState.LOADING)
            try:
                served = await self._build(name, config_json, files or {})
            except MdeployError as error:
                # Versions still served stay READY in the index; the reason shows when none are.
                self._status[name] = _Status(ModelState.UNAVAILABLE, error.message)
                raise
            old = self._models.get(name)
            self._models[name] = served
            self._status[name] = _Status(ModelState.READY)
            log.info("model %s ready, versions %s", name, sorted(served.versions))
            if old is not None:
                self._retire_later(old)

    async def unload(self, name: str) -> None:
        """Stop serving ``name``: new requests get NOT_FOUND, queued ones finish."""
        async with self._lock(name):
            served = self._models.pop(name, None)
            self._status[name] = _Status(ModelState.UNAVAILABLE, "unloaded")
            if served is not None:
                await self._retire(served)
                log.info("model %s unloaded", name)

    def _retire_later(self, served: LoadedModel) -> None:
        task = asyncio.create_task(self._retire(served))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _retire(self, served: LoadedModel) -> None:
        await asyncio.gather(*(v.close() for v in served.versions.values()))
        if served.files_dir is not None:
            shutil.rmtree(served.files_dir, ignore_errors=True)

    async def _build(self, name: str, config_json: str | None, files: dict[str, bytes]) -> LoadedModel:
        override = model_config.parse_config_json(config_json) if config_json is not None else None
        files_dir: Path | None = None
        if files:
            if override is None:
                raise InvalidInput(f"load of '{name}' with files needs the 'config' parameter as well")
            files_dir = await asyncio.to_thread(self._write_files, name, files)
            model_dir = files_dir
        else:
            model_dir = self._repository_dir(name)
        try:
            config = override if override is not None else self._read_config(model_dir)
            model_config.check_supported(config, name)
            versions = await self._load_versions(name, model_dir, config)
        except BaseException:
            if files_dir is not None:
                shutil.rmtree(files_dir, ignore_errors=True)
            raise
        return LoadedModel(name, versions[max(versions)].config, versions, files_dir)

    def _repository_dir(self, name: str) -> Path:
        if self.root is None or not (self.root / name).is_dir():
            raise NotFound(f"model '{name}' is not in the model repository")
        return self.root / name

    @staticmethod
    def _read_config(model_dir: Path) -> mc.ModelConfig:
        path = model_dir / CONFIG_FILE
        return model_config.read_config_file(path) if path.is_file() else mc.ModelConfig()

    async def _load_versions(
        self, name: str, model_dir: Path, config: mc.ModelConfig
    ) -> dict[int, ModelVersion]:
        filename = config.default_model_filename or model_config.DEFAULT_MODEL_FILENAME
        present = _present_versions(model_dir, filename)
        selected = model_config.select_versions(config.version_policy, present)
        if not selected:
            raise ModelLoadError(
                f"model '{name}': no version folder holds {filename} for the version policy "
                f"(found versions {sorted(present)})"
            )
        loaded: dict[int, ModelVersion] = {}
        try:
            for version in selected:
                loaded[version] = await ModelVersion.load(
                    name, version, model_dir / str(version) / filename, config, self.options
                )
        except BaseException:
            await asyncio.gather(*(v.close() for v in loaded.values()))
            raise
        return loaded

    def _write_files(self, name: str, files: dict[str, bytes]) -> Path:
        if self._work_dir is None:
            base = self.settings.work_dir
            if base is not None:
                base.mkdir(parents=True, exist_ok=True)
            self._work_dir = Path(tempfile.mkdtemp(prefix="mdeploy-server-", dir=base))
        target = self._work_dir / f"{name}-{uuid.uuid4().hex}"
        for relative, data in files.items():
            path = target / _safe_relative(relative)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        return target


def _present_versions(model_dir: Path, filename: str) -> list[int]:
    """Version folders (positive integers) that hold the model file."""
    return [int(p.name) for p in model_dir.iterdir() if p.name.isdigit() and (p / filename).is_file()]


def _check_model_name(name: str) -> None:
    if not name or name in (".", "..") or "/" in name or "\\" in name or name.startswith("."):
        raise InvalidInput(f"invalid model name {name!r}: use letters, digits, '-', '_' and '.'")


def _safe_relative(relative: str) -> PurePosixPath:
    """``<version>/<file>`` of a file override, refusing paths that leave the model folder."""
    path = PurePosixPath(relative)
    if path.is_absolute() or ".." in path.parts or len(path.parts) < 2 or not path.parts[0].isdigit():
        raise InvalidInput(
            f"file override 'file:{relative}' must be 'file:<version>/<name>' inside the model folder, "
            "e.g. 'file:1/model.onnx'"
        )
    return path
