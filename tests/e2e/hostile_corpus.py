"""A corpus of hostile and broken model packages, derived from one valid ``arms`` package.

Each case is the raw upload body and what the gateway must answer: its HTTP status and a
substring of the error that names the problem. Cases whose attack would write or execute
something point it at ``escape_dir`` (a folder outside the gateway's data folder), so a test
can check that nothing ever arrived there. Every package that should fail a late check
(ONNX, onnxruntime, samples) lists correct sha256 hashes, so it passes the early ones.
"""

from __future__ import annotations

import io
import pickle
import stat
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from tests.modelpkg.zips import entries, flag_encrypted, make_zip, manifest_of, relisted, zipped

MiB = 1024 * 1024
UPLOAD_LIMIT = 4 * MiB
"""The gateway's MDEPLOY_MAX_UPLOAD_BYTES for the corpus: every case but one fits under it."""

Files = dict[str, bytes]


@dataclass(frozen=True)
class Base:
    """What the cases are made from: a valid package and the folder attacks aim at."""

    path: Path
    escape_dir: Path

    @property
    def files(self) -> Files:
        return entries(self.path)

    @property
    def model(self) -> bytes:
        return self.files["model.onnx"]


@dataclass(frozen=True)
class Hostile:
    name: str
    status: int
    problem: str
    """A substring of the gateway's error message that names what is wrong."""
    build: Callable[[Base], bytes]
    """The upload body."""


class _OpensAFile:
    """Unpickling this creates ``marker``: proof that someone unpickled it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def _with_graph(model: bytes, change: Callable[[onnx.ModelProto], None]) -> bytes:
    parsed = onnx.load_from_string(model)
    change(parsed)
    return parsed.SerializeToString()


def _external(location: str) -> Callable[[onnx.ModelProto], None]:
    """Move the data of the first Constant's tensor to external data at ``location``."""

    def change(model: onnx.ModelProto) -> None:
        node = next(n for n in model.graph.node if n.op_type == "Constant")
        tensor = node.attribute[0].t
        length = onnx.numpy_helper.to_array(tensor).nbytes
        tensor.ClearField("int64_data")
        tensor.data_location = TensorProto.EXTERNAL
        for key, value in (("location", location), ("offset", "0"), ("length", str(length))):
            tensor.external_data.add(key=key, value=value)

    return change


def _graph(
    *nodes: onnx.NodeProto, initializers: list[TensorProto] | None = None
) -> Callable[[onnx.ModelProto], None]:
    """Replace the graph's nodes, keeping its inputs and outputs (x -> y, FP32 [batch, 2])."""

    def change(model: onnx.ModelProto) -> None:
        del model.graph.node[:]
        model.graph.node.extend(nodes)
        model.graph.initializer.extend(initializers or [])

    return change


def _unknown_operator(model: onnx.ModelProto) -> None:
    """An operator of a custom domain: the ONNX checker cannot know it, onnxruntime has no kernel."""
    _graph(helper.make_node("Frobnicate", ["x"], ["y"], domain="com.example.hostile"))(model)
    model.opset_import.append(helper.make_opsetid("com.example.hostile", 1))


_TYPE_CLASH = _graph(
    helper.make_node("Add", ["x", "int_one"], ["y"]),
    initializers=[helper.make_tensor("int_one", TensorProto.INT64, [], [1])],
)
"""FP32 + INT64: structurally valid ONNX that fails onnxruntime's type inference on load."""


def _huge_dims(model: onnx.ModelProto) -> None:
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.shape.dim[1].dim_value = 2**62


def _signature(files: Files, shape: list[int]) -> Files:
    signature = manifest_of(files)["signature"]
    for spec in (*signature["inputs"], *signature["outputs"]):
        spec["shape"] = shape
    return relisted(files, signature=signature)


def _pickled_samples(files: Files, marker: Path) -> bytes:
    buffer = io.BytesIO()
    array = np.empty((2, 2), dtype=object)
    array[0, 0] = _OpensAFile(marker)
    np.lib.format.write_array(buffer, array, allow_pickle=True)
    return zipped(entries(files["samples.npz"]) | {"inputs/x.npy": buffer.getvalue()})


def _shifted_outputs(files: Files) -> bytes:
    """samples.npz with every expected output off by 0.5."""
    samples = entries(files["samples.npz"])
    shifted = {}
    for name, data in samples.items():
        array = np.lib.format.read_array(io.BytesIO(data))
        buffer = io.BytesIO()
        np.lib.format.write_array(buffer, array + 0.5 if name.startswith("outputs/") else array)
        shifted[name] = buffer.getvalue()
    return zipped(shifted)


def _symlink(name: str, target: str) -> tuple[zipfile.ZipInfo, bytes]:
    link = zipfile.ZipInfo(name)
    link.create_system = 3
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    return link, target.encode()


def _deflated(members: list[tuple[str, bytes]]) -> bytes:
    return make_zip(members, compression=zipfile.ZIP_DEFLATED)


def _compressed_with(files: Files, method: int) -> bytes:
    body = bytearray(zipped(files))
    # Rewrite model.onnx's method in its local header and central record (zipfile cannot
    # write methods it does not implement): the reader must refuse it by the number alone.
    for signature, offset in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
        at = body.find(signature)
        while at >= 0:
            name_at = at + (30 if signature == b"PK\x03\x04" else 46)
            if body[name_at : name_at + 10] == b"model.onnx":
                body[at + offset : at + offset + 2] = method.to_bytes(2, "little")
            at = body.find(signature, at + 4)
    return bytes(body)


def _package(files: Files) -> bytes:
    """``files`` as a package whose manifest lists their true sha256 hashes."""
    return zipped(relisted(files))


def _with_model(change: Callable[[onnx.ModelProto], None]) -> Callable[[Base], bytes]:
    return lambda base: _package(base.files | {"model.onnx": _with_graph(base.model, change)})


def _tampered(base: Base) -> bytes:
    model = bytearray(base.model)
    model[-1] ^= 0xFF
    return zipped(base.files | {"model.onnx": bytes(model)})


def _many_small_bombs(base: Base) -> bytes:
    """96 entries of 1 MiB - 1 zeros: each under the per-entry ratio check's floor of 1 MiB,
    listed with true hashes, so that only a check of the whole archive can stop them."""
    parts = {f"part-{i:03}.bin": bytes(MiB - 1) for i in range(96)}
    return _deflated(sorted(relisted(base.files | parts).items()))


def _climbing(base: Base) -> str:
    return "../" * 16 + str(base.escape_dir).lstrip("/")  # from any folder to the root, then down


CORPUS: list[Hostile] = [
    # ---- not a package at all ----
    Hostile("not a zip", 422, "package is not a valid zip archive", lambda _: b"#!/bin/sh\nrm -rf /\n" * 50),
    Hostile(
        "truncated zip",
        422,
        "package is not a valid zip archive",
        lambda base: base.path.read_bytes()[: base.path.stat().st_size // 2],
    ),
    Hostile("empty body", 400, "the body is empty", lambda _: b""),
    Hostile(
        "over the upload limit", 413, "over the upload limit", lambda _: b"PK\x03\x04" + bytes(UPLOAD_LIMIT)
    ),
    # ---- the archive ----
    Hostile(
        "zip-slip",
        422,
        "escapes the package ('..' in its path)",
        lambda base: _package(base.files | {f"{_climbing(base)}/zip-slip.txt": b"pwned"}),
    ),
    Hostile(
        "absolute path",
        422,
        "escapes the package (absolute path)",
        lambda base: _package(base.files | {f"{base.escape_dir}/absolute.txt": b"pwned"}),
    ),
    Hostile(
        "symbolic link",
        422,
        "entry 'weights.bin' is a symbolic link",
        lambda base: make_zip(
            [*sorted(base.files.items()), _symlink("weights.bin", f"{base.escape_dir}/link")]
        ),
    ),
    Hostile(
        "directory entry",
        422,
        "entry 'source/' is a directory",
        lambda base: zipped(base.files | {"source/": b""}),
    ),
    Hostile(
        "zip bomb",
        422,
        "entry 'source/zeros.bin' has compression ratio",
        lambda base: _deflated([*sorted(base.files.items()), ("source/zeros.bin", bytes(32 * MiB))]),
    ),
    Hostile("zip bomb of many small entries", 422, "(zip bomb?)", _many_small_bombs),
    Hostile(
        "duplicate entries",
        422,
        "duplicate entry 'model.onnx'",
        lambda base: make_zip(
            [*sorted(base.files.items()), ("model.onnx", _with_graph(base.model, _TYPE_CLASH))]
        ),
    ),
    Hostile(
        "encrypted entry",
        422,
        "entry 'model.onnx' is encrypted",
        lambda base: flag_encrypted(zipped(base.files), "model.onnx"),
    ),
    Hostile(
        "unsupported compression",
        422,
        "entry 'model.onnx' uses compression method 12",
        lambda base: _compressed_with(base.files, zipfile.ZIP_BZIP2),
    ),
    # ---- the manifest and its hashes ----
    Hostile("tampered hash", 422, "entry 'model.onnx' does not match its sha256", _tampered),
    Hostile(
        "unlisted entry",
        422,
        "entry 'payload.sh' is not listed in the manifest",
        lambda base: zipped(base.files | {"payload.sh": b"#!/bin/sh\n"}),
    ),
    Hostile(
        "missing model",
        422,
        "package has no 'model.onnx' entry",
        lambda base: _package({k: v for k, v in base.files.items() if k != "model.onnx"}),
    ),
    Hostile(
        "manifest not JSON",
        422,
        "MANIFEST.json is not valid JSON",
        lambda base: zipped(base.files | {"MANIFEST.json": b"{'name': "}),
    ),
    Hostile(
        "manifest nested 100,000 levels deep",
        422,
        "MANIFEST.json nests too deeply to read",
        lambda base: zipped(base.files | {"MANIFEST.json": b'{"a":' * 100_000 + b"1" + b"}" * 100_000}),
    ),
    Hostile(
        "model name that climbs",
        422,
        "MANIFEST.json is invalid: name",
        lambda base: zipped(relisted(base.files, name="../../escape")),
    ),
    Hostile(
        "huge declared shapes in the manifest",
        422,
        "model.onnx input 'x' has shape [-1, 2]; the manifest says [-1, 4611686018427387904]",
        lambda base: zipped(_signature(base.files, [-1, 2**62])),
    ),
    Hostile(
        "shape of 1000 dimensions in the manifest",
        422,
        "MANIFEST.json is invalid: signature.inputs.0.shape",
        lambda base: zipped(_signature(base.files, [-1] * 1000)),
    ),
    Hostile(
        "huge declared shapes in ONNX and manifest",
        422,
        "sample input 'x' has shape [2, 2]; the signature says [-1, 4611686018427387904]",
        lambda base: zipped(
            _signature(base.files | {"model.onnx": _with_graph(base.model, _huge_dims)}, [-1, 2**62])
        ),
    ),
    # ---- model.onnx ----
    Hostile(
        "external data outside the package",
        422,
        "references external data '../../etc/passwd' outside the package",
        _with_model(_external("../../etc/passwd")),
    ),
    Hostile(
        "external data at an absolute path",
        422,
        "weights.bin' outside the package",
        lambda base: _with_model(_external(f"{base.escape_dir}/weights.bin"))(base),
    ),
    Hostile(
        "graph onnxruntime cannot load: unknown operator",
        422,
        "onnxruntime cannot run the model: [ONNXRuntimeError]",
        _with_model(_unknown_operator),
    ),
    Hostile(
        "graph onnxruntime cannot load: type clash",
        422,
        "onnxruntime cannot run the model: [ONNXRuntimeError]",
        _with_model(_TYPE_CLASH),
    ),
    Hostile(
        "pickle disguised as model.onnx",
        422,
        "model.onnx is not a valid ONNX model",
        lambda base: _package(
            base.files | {"model.onnx": pickle.dumps(_OpensAFile(base.escape_dir / "unpickled"))}
        ),
    ),
    Hostile(
        "pickle disguised as samples",
        422,
        "samples entry 'inputs/x.npy' holds Python objects (needs pickle)",
        lambda base: _package(
            base.files | {"samples.npz": _pickled_samples(base.files, base.escape_dir / "unpickled")}
        ),
    ),
    Hostile(
        "samples that do not reproduce",
        422,
        "model.onnx does not reproduce the package's samples",
        lambda base: _package(base.files | {"samples.npz": _shifted_outputs(base.files)}),
    ),
]
