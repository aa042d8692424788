"""The manifest schema: canonical JSON, strict fields, clear refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.errors import PackageError
from modelpkg import FORMAT_VERSION, read_package
from modelpkg.manifest import Labels, Manifest, dump_manifest, parse_manifest


@pytest.fixture
def manifest(affine_package: Path) -> Manifest:
    return read_package(affine_package).manifest


def test_manifest_json_is_canonical(manifest: Manifest) -> None:
    raw = dump_manifest(manifest)
    data = json.loads(raw)
    assert list(data) == sorted(data)
    assert raw.endswith(b"}\n")
    assert parse_manifest(raw) == manifest
    assert dump_manifest(parse_manifest(raw)) == raw


def test_manifest_carries_what_the_issue_lists(manifest: Manifest) -> None:
    data = json.loads(dump_manifest(manifest))
    assert data["format_version"] == FORMAT_VERSION
    assert set(data) >= {
        "name", "version", "description", "tags", "framework", "signature", "labels", "serving",
        "metrics", "provenance", "parity", "files",
    }  # fmt: skip
    assert set(data["serving"]) == {
        "max_batch_size", "preferred_batch_sizes", "max_queue_delay_us", "instances", "device",
    }  # fmt: skip
    assert set(data["provenance"]) == {
        "data", "code_commit", "code_dirty", "parent_digest", "created_at", "created_by",
    }  # fmt: skip
    assert data["provenance"]["created_at"] == "2024-05-06T07:08:09Z"


@pytest.mark.parametrize("version", [0, 2, "1", None, True])
def test_other_format_versions_are_refused(manifest: Manifest, version: object) -> None:
    data = json.loads(dump_manifest(manifest)) | {"format_version": version}
    with pytest.raises(PackageError, match="format"):
        parse_manifest(json.dumps(data).encode())


def test_unknown_fields_are_refused(manifest: Manifest) -> None:
    data = json.loads(dump_manifest(manifest)) | {"run_this": "rm -rf /"}
    with pytest.raises(PackageError, match="run_this: Extra inputs are not permitted"):
        parse_manifest(json.dumps(data).encode())


def test_labels_must_fit_the_output_they_index(manifest: Manifest) -> None:
    data = json.loads(dump_manifest(manifest))
    data["labels"] = Labels(output="y", names=["a", "b"]).model_dump()
    with pytest.raises(PackageError, match="2 labels for output 'y' whose last dimension is 3"):
        parse_manifest(json.dumps(data).encode())


def test_deeply_nested_manifest_is_a_package_error_not_a_crash() -> None:
    with pytest.raises(PackageError, match="nests too deeply"):
        parse_manifest(b'{"a":' * 100_000 + b"1" + b"}" * 100_000)
