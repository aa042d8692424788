"""Hostile or broken packages are refused, each with a message naming its problem.

The reader never extracts anything, so a refused entry cannot have written a file; these
tests check that the refusal happens and says why.
"""

from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest

from core.errors import PackageError
from modelpkg import Limits, read_package, verify_samples
from modelpkg.samples import Samples, dump_samples, parse_samples
from tests.modelpkg.zips import entries, flag_encrypted, make_zip, manifest_of, relisted, zipped


@pytest.fixture
def files(affine_package: Path) -> dict[str, bytes]:
    return entries(affine_package)


def refused(package: bytes, match: str, limits: Limits | None = None) -> None:
    with pytest.raises(PackageError, match=match):
        read_package(package, limits)


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("/etc/passwd", r"entry '/etc/passwd' escapes the package \(absolute path\)"),
        ("../evil.sh", r"entry '../evil.sh' escapes the package \('..' in its path\)"),
        ("source/../../evil.sh", "escapes the package"),
        ("C:/Windows/evil.dll", "escapes the package"),
        ("source\\..\\evil", "is not allowed"),
        ("source/./x", "is not allowed"),
    ],
)
def test_entry_paths_that_escape_are_refused(files: dict[str, bytes], name: str, problem: str) -> None:
    refused(zipped(files | {name: b"x"}), problem)


def test_symbolic_link_entries_are_refused(files: dict[str, bytes]) -> None:
    link = zipfile.ZipInfo("source/model.onnx")
    link.create_system = 3
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    refused(
        make_zip([*files.items(), (link, b"/etc/passwd")]), "entry 'source/model.onnx' is a symbolic link"
    )


def test_directory_entries_are_refused(files: dict[str, bytes]) -> None:
    refused(zipped(files | {"source/": b""}), "entry 'source/' is a directory")


def test_duplicate_entries_are_refused(files: dict[str, bytes]) -> None:
    refused(make_zip([*files.items(), ("model.onnx", b"second copy")]), "duplicate entry 'model.onnx'")


def test_more_entries_than_the_limit_are_refused(files: dict[str, bytes]) -> None:
    many = [(f"source/{i}", b"") for i in range(10_000)]
    refused(make_zip([*files.items(), *many]), f"has {len(files) + 10_000} entries; the limit is 10000")


def test_entries_over_the_size_bound_are_refused(files: dict[str, bytes]) -> None:
    big = files | {"source/big.bin": bytes(5000)}
    refused(
        zipped(big),
        "entry 'source/big.bin' is 5000 bytes uncompressed; the limit is 4096",
        Limits(max_entry_bytes=4096),
    )


def test_total_uncompressed_size_over_the_bound_is_refused(files: dict[str, bytes]) -> None:
    parts = files | {f"source/part{i}": bytes(3000) for i in range(4)}
    refused(
        zipped(parts),
        r"unpacks to \d+ bytes; the limit is 10000 \(zip bomb\?\)",
        Limits(max_total_bytes=10_000),
    )


def test_zip_bombs_are_refused_by_compression_ratio(files: dict[str, bytes]) -> None:
    bomb = make_zip([*files.items(), ("source/zeros", bytes(8 << 20))], compression=zipfile.ZIP_DEFLATED)
    refused(bomb, r"entry 'source/zeros' has compression ratio \d+; the limit is 100 \(zip bomb\?\)")


def test_entries_whose_hash_differs_from_the_manifest_are_refused(files: dict[str, bytes]) -> None:
    tampered = bytearray(files["model.onnx"])
    tampered[-1] ^= 0xFF
    refused(zipped(files | {"model.onnx": bytes(tampered)}), "entry 'model.onnx' does not match its sha256")


@pytest.mark.parametrize("missing", ["MANIFEST.json", "model.onnx", "samples.npz"])
def test_missing_required_entries_are_refused(files: dict[str, bytes], missing: str) -> None:
    del files[missing]
    refused(zipped(files), f"package has no '{missing}' entry")


def test_entries_missing_from_the_manifest_are_refused(files: dict[str, bytes]) -> None:
    refused(zipped(files | {"notes.txt": b"hi"}), "entry 'notes.txt' is not listed in the manifest")


def test_listed_entries_missing_from_the_package_are_refused(files: dict[str, bytes]) -> None:
    listed = relisted(files | {"source/model.keras": b"k"})
    del listed["source/model.keras"]
    refused(zipped(listed), "the manifest lists 'source/model.keras' but the package has no such entry")


def test_unknown_format_versions_are_refused_clearly(files: dict[str, bytes]) -> None:
    refused(
        zipped(relisted(files, format_version=2)),
        "package format version 2 is not supported; this mdeploy reads format version 1",
    )


def test_invalid_manifests_name_the_field(files: dict[str, bytes]) -> None:
    signature = manifest_of(files)["signature"]
    signature["inputs"][0]["datatype"] = "FLOAT"
    refused(
        zipped(relisted(files, signature=signature)), r"MANIFEST.json is invalid: signature.inputs.0.datatype"
    )
    refused(zipped(files | {"MANIFEST.json": b"{"}), "MANIFEST.json is not valid JSON")


def test_a_manifest_that_misdescribes_the_model_is_refused(files: dict[str, bytes]) -> None:
    signature = manifest_of(files)["signature"]
    signature["outputs"][0]["datatype"] = "FP64"
    refused(
        zipped(relisted(files, signature=signature)), "model.onnx output 'y' is FP32; the manifest says FP64"
    )


def test_not_a_zip_is_refused() -> None:
    refused(b"PK\x03\x04 definitely not a zip", "package is not a valid zip archive")


def test_encrypted_entries_are_refused(files: dict[str, bytes]) -> None:
    package = flag_encrypted(make_zip([*files.items(), ("source/secret", b"x")]), "source/secret")
    refused(package, "entry 'source/secret' is encrypted")


def test_model_that_is_not_onnx_is_refused(files: dict[str, bytes]) -> None:
    refused(zipped(relisted(files | {"model.onnx": b"\xff\xff\xff"})), "model.onnx is not a valid ONNX model")


def test_samples_needing_pickle_are_refused(files: dict[str, bytes]) -> None:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    samples = make_zip([*entries(files["samples.npz"]).items(), ("inputs/extra.npy", buffer.getvalue())])
    refused(zipped(relisted(files | {"samples.npz": samples})), "needs pickle")


def test_samples_whose_header_claims_more_data_than_they_hold_are_refused() -> None:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.zeros((2, 2), dtype=np.float32))
    forged = buffer.getvalue().replace(b"(2, 2)", b"(9, 9)")
    with pytest.raises(PackageError, match=r"declares shape \(9, 9\) of float32 but carries 16 bytes"):
        parse_samples(make_zip([("inputs/x.npy", forged), ("outputs/y.npy", buffer.getvalue())]))


def _external(model_bytes: bytes, location: str) -> bytes:
    model = onnx.load_from_string(model_bytes)
    weights = model.graph.initializer[0]
    data = weights.raw_data or onnx.numpy_helper.to_array(weights).tobytes()
    onnx.external_data_helper.set_external_data(weights, location, offset=0, length=len(data))
    weights.ClearField("raw_data")
    weights.ClearField("float_data")
    weights.data_location = onnx.TensorProto.EXTERNAL
    return model.SerializeToString()


@pytest.mark.parametrize("location", ["../weights.bin", "/etc/passwd", "source/weights.bin", "absent.bin"])
def test_external_data_outside_the_package_is_refused(files: dict[str, bytes], location: str) -> None:
    tampered = files | {
        "model.onnx": _external(files["model.onnx"], location),
        "source/weights.bin": bytes(48),
    }
    refused(zipped(relisted(tampered)), f"references external data '{location}' outside the package")


def test_external_data_inside_the_package_is_read_and_runs(files: dict[str, bytes]) -> None:
    model = onnx.load_from_string(files["model.onnx"])
    weights = onnx.numpy_helper.to_array(model.graph.initializer[0]).tobytes()
    inside = files | {"model.onnx": _external(files["model.onnx"], "weights.bin"), "weights.bin": weights}
    package = read_package(zipped(relisted(inside)))
    assert package.external_data == {"weights.bin": weights}
    assert verify_samples(package).passed


def test_a_package_whose_onnx_disagrees_with_its_samples_is_refused(files: dict[str, bytes]) -> None:
    samples = parse_samples(files["samples.npz"])
    wrong = {name: array + 0.5 for name, array in samples.outputs.items()}
    package = read_package(
        zipped(relisted(files | {"samples.npz": dump_samples(Samples(samples.inputs, wrong))}))
    )
    with pytest.raises(
        PackageError, match=r"does not reproduce the package's samples: parity failed: output 'y'"
    ):
        verify_samples(package)


def test_random_corruption_is_refused_with_package_errors_only(affine_package: Path) -> None:
    data = affine_package.read_bytes()
    rng = np.random.default_rng(7)
    for _ in range(300):
        corrupt = bytearray(data)
        for position in rng.integers(0, len(data), size=int(rng.integers(1, 4))):
            corrupt[position] = int(rng.integers(0, 256))
        try:
            verify_samples(read_package(bytes(corrupt)))
        except PackageError:
            continue


def test_an_oversized_central_directory_is_refused_before_parsing(files: dict[str, bytes]) -> None:
    long_names = {f"source/{'x' * 4000}{i}": b"" for i in range(3)}  # 6 entries, ~12 kB of directory
    limits = Limits(max_entries=6)
    refused(zipped(files | long_names), "directory, too large for the limit of 6 entries", limits)
