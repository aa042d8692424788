"""Our protocol is Triton's on the wire: same services, messages, field numbers and types."""

from __future__ import annotations

import subprocess
import sys

import pytest
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FileDescriptor
from tritonclient.grpc import model_config_pb2 as triton_config
from tritonclient.grpc import service_pb2 as triton_service

from protos import generate
from protos.generated import inference_pb2, model_config_pb2

# Starts real processes (servers, gateways, redis, pip or the CLI): the e2e tier.
pytestmark = pytest.mark.e2e


def _field_facts(message: Descriptor) -> dict[str, tuple[int, int, bool, str]]:
    facts = {}
    for f in message.fields:
        referenced = f.message_type or f.enum_type
        facts[f.name] = (f.number, f.type, f.is_repeated, referenced.full_name if referenced else "")
    return facts


def _all_messages(file: FileDescriptor) -> dict[str, Descriptor]:
    found: dict[str, Descriptor] = {}

    def visit(message: Descriptor) -> None:
        found[message.full_name] = message
        for nested in message.nested_types:
            visit(nested)

    for message in file.message_types_by_name.values():
        visit(message)
    return found


def _all_enums(file: FileDescriptor) -> dict[str, EnumDescriptor]:
    enums = {e.full_name: e for e in file.enum_types_by_name.values()}
    for message in _all_messages(file).values():
        enums.update({e.full_name: e for e in message.enum_types})
    return enums


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (inference_pb2.DESCRIPTOR, triton_service.DESCRIPTOR),
        (model_config_pb2.DESCRIPTOR, triton_config.DESCRIPTOR),
    ],
    ids=["inference", "model_config"],
)
def test_every_triton_message_field_has_our_number_and_type(
    ours: FileDescriptor, theirs: FileDescriptor
) -> None:
    our_messages = _all_messages(ours)
    for name, message in _all_messages(theirs).items():
        assert name in our_messages, f"missing message {name}"
        assert _field_facts(our_messages[name]) == _field_facts(message), name


def test_enums_have_triton_values() -> None:
    ours = _all_enums(model_config_pb2.DESCRIPTOR)
    for name, enum in _all_enums(triton_config.DESCRIPTOR).items():
        assert {v.name: v.number for v in ours[name].values} == {v.name: v.number for v in enum.values}, name


def test_service_methods_match_triton() -> None:
    ours = inference_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    theirs = triton_service.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert ours.full_name == theirs.full_name == "inference.GRPCInferenceService"

    def shape(service: object) -> dict[str, tuple[str, str, bool, bool]]:
        return {
            m.name: (m.input_type.full_name, m.output_type.full_name, m.client_streaming, m.server_streaming)
            for m in service.methods  # type: ignore[attr-defined]
        }

    assert shape(ours) == shape(theirs)


def test_messages_round_trip_between_our_stubs_and_tritonclient() -> None:
    ours = inference_pb2.ModelInferRequest(model_name="m", model_version="2", id="r")
    tensor = ours.inputs.add(name="x", datatype="FP32", shape=[1, 2])
    tensor.parameters["p"].uint64_param = 7
    ours.parameters["timeout"].double_param = 1.5
    ours.raw_input_contents.append(b"\x00" * 8)
    theirs = triton_service.ModelInferRequest.FromString(ours.SerializeToString())
    assert theirs.inputs[0].parameters["p"].uint64_param == 7
    assert theirs.parameters["timeout"].double_param == 1.5
    assert inference_pb2.ModelInferRequest.FromString(theirs.SerializeToString()) == ours


def test_stubs_import_beside_tritonclient_in_one_process() -> None:
    code = "import tritonclient.grpc\nimport protos.generated.inference_pb2"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_committed_stubs_match_a_fresh_generation() -> None:
    assert generate.differences(generate.GENERATED_DIR) == []
