"""config.pbtxt as the registry writes it must parse with Triton's own model-config proto."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import tritonclient.grpc.model_config_pb2 as triton_config
from google.protobuf import json_format, text_format

from core.errors import PackageError
from gateway.registry.repository import TritonRepository
from gateway.registry.triton_config import model_config, wire_config_json
from modelpkg import Manifest, read_package


def parse_pbtxt(text: str) -> triton_config.ModelConfig:
    config = triton_config.ModelConfig()
    text_format.Parse(text, config)
    return config


@pytest.fixture(scope="module")
def manifest_data(demo_packages: dict[str, Path]) -> dict[str, Any]:
    data: dict[str, Any] = read_package(demo_packages["digits-sklearn"]).manifest.model_dump(mode="json")
    return data


def manifest_with(data: dict[str, Any], **changes: Any) -> Manifest:
    return Manifest.model_validate({**json.loads(json.dumps(data)), **changes})


def test_the_written_config_pbtxt_parses_with_tritonclients_model_config(
    tmp_path: Path, manifest_data: dict[str, Any]
) -> None:
    manifest = manifest_with(manifest_data)
    assert manifest.labels is not None
    repository = TritonRepository(tmp_path)
    repository.write_config("digits", model_config("digits", manifest, [3, 1]), manifest.labels.names)

    config = parse_pbtxt((tmp_path / "digits" / "config.pbtxt").read_text())

    assert (config.name, config.platform, config.max_batch_size) == ("digits", "onnxruntime_onnx", 64)
    assert list(config.version_policy.specific.versions) == [1, 3]
    assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == [
        ("pixels", triton_config.TYPE_FP32, [64])
    ]
    label, probabilities = config.output
    # A batch-only tensor: Triton wants non-empty dims, so [1] reshaped to [].
    assert (label.name, list(label.dims), label.HasField("reshape"), list(label.reshape.shape)) == (
        "label",
        [1],
        True,
        [],
    )
    assert (probabilities.name, list(probabilities.dims), probabilities.label_filename) == (
        "probabilities",
        [10],
        "labels.txt",
    )
    assert (tmp_path / "digits" / "labels.txt").read_text().splitlines() == [str(d) for d in range(10)]
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    assert [(g.count, g.kind) for g in config.instance_group] == [
        (1, triton_config.ModelInstanceGroup.KIND_AUTO)
    ]


def test_serving_hints_become_batching_and_instance_settings(manifest_data: dict[str, Any]) -> None:
    serving = {
        "max_batch_size": 32,
        "preferred_batch_sizes": [8, 16],
        "max_queue_delay_us": 2000,
        "instances": 3,
        "device": "gpu",
    }
    config = parse_pbtxt(
        str(
            text_format.MessageToString(model_config("m", manifest_with(manifest_data, serving=serving), [1]))
        )
    )

    assert config.max_batch_size == 32
    assert list(config.dynamic_batching.preferred_batch_size) == [8, 16]
    assert config.dynamic_batching.max_queue_delay_microseconds == 2000
    assert [(g.count, g.kind) for g in config.instance_group] == [
        (3, triton_config.ModelInstanceGroup.KIND_GPU)
    ]


def test_a_model_without_a_variable_first_dimension_does_not_batch(manifest_data: dict[str, Any]) -> None:
    signature = {
        "inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1, 64]}],
        "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [1, 10]}],
    }
    manifest = manifest_with(manifest_data, signature=signature)

    config = parse_pbtxt(str(text_format.MessageToString(model_config("m", manifest, [1]))))

    assert config.max_batch_size == 0
    assert [list(t.dims) for t in [*config.input, *config.output]] == [[1, 64], [1, 10]]
    assert not config.HasField("dynamic_batching")


def test_a_scalar_tensor_is_refused_with_the_fix(manifest_data: dict[str, Any]) -> None:
    signature = {
        "inputs": [{"name": "pixels", "datatype": "FP32", "shape": []}],
        "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [10]}],
    }
    with pytest.raises(PackageError, match=r"'pixels' is a scalar.*shape \[1\]"):
        model_config("m", manifest_with(manifest_data, signature=signature, labels=None), [1])


def test_the_load_parameter_is_the_same_config_without_the_labels_file(manifest_data: dict[str, Any]) -> None:
    config = model_config("digits", manifest_with(manifest_data), [1])

    wire = json_format.Parse(wire_config_json(config), triton_config.ModelConfig())

    assert [o.label_filename for o in wire.output] == ["", ""]
    wire.output[1].label_filename = "labels.txt"
    assert wire == parse_pbtxt(str(text_format.MessageToString(config)))
