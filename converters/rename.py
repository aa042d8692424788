"""Renaming inside ONNX graphs: inputs and outputs to the signature's names, the rest canonical.

Converters name tensors after framework internals (``serving_default_x:0``, ``Identity:0``)
and number them with process-wide counters, so converting the same model twice can give
different names and thus different bytes. ``canonicalize`` renumbers every internal name
and symbolic dimension in graph order; ``rename_io`` gives inputs and outputs their public
names; ``dynamic_batch`` makes the first dimension of every input and output symbolic.
A name is renamed consistently in the main graph and every subgraph (If/Loop/Scan bodies).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping

import onnx

BATCH_DIM = "batch"


def graph_inputs(graph: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    """The graph's real inputs (old models also list initializers as inputs)."""
    initializers = {tensor.name for tensor in graph.initializer}
    return [value for value in graph.input if value.name not in initializers]


def _graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from _graphs(attribute.g)
            elif attribute.type == onnx.AttributeProto.GRAPHS:
                for subgraph in attribute.graphs:
                    yield from _graphs(subgraph)


def _value_names(graph: onnx.GraphProto) -> Iterator[str]:
    """Every value name in graph order: inputs, initializers, node outputs, outputs."""
    for sub in _graphs(graph):
        yield from (value.name for value in sub.input)
        yield from (tensor.name for tensor in sub.initializer)
        yield from (sparse.values.name for sparse in sub.sparse_initializer)
        for node in sub.node:
            yield from (name for name in [*node.input, *node.output] if name)
        yield from (value.name for value in sub.output)
        yield from (value.name for value in sub.value_info)


def _apply(graph: onnx.GraphProto, mapping: Mapping[str, str]) -> None:
    def new(name: str) -> str:
        return mapping.get(name, name)

    for sub in _graphs(graph):
        for value in [*sub.input, *sub.output, *sub.value_info]:
            value.name = new(value.name)
        for tensor in sub.initializer:
            tensor.name = new(tensor.name)
        for sparse in sub.sparse_initializer:
            sparse.values.name = new(sparse.values.name)
        for node in sub.node:
            node.input[:] = [new(name) if name else name for name in node.input]
            node.output[:] = [new(name) for name in node.output]


def rename_io(model: onnx.ModelProto, mapping: Mapping[str, str]) -> None:
    """Rename main-graph inputs/outputs in place; internal names that clash move aside."""
    graph = model.graph
    taken = set(_value_names(graph))
    wanted = set(mapping.values())
    full = dict(mapping)
    for name in sorted(taken & wanted):
        if name not in mapping:
            full[name] = _fresh(name, taken | wanted)
            taken.add(full[name])
    _apply(graph, full)


def _fresh(base: str, taken: set[str]) -> str:
    return next(f"{base}__{i}" for i in itertools.count(1) if f"{base}__{i}" not in taken)


def canonicalize(model: onnx.ModelProto) -> None:
    """Renumber internal names and symbolic dims, drop doc strings: same model, same bytes."""
    graph = model.graph
    public = {value.name for value in [*graph_inputs(graph), *graph.output]}
    counter = (f"v{i}" for i in itertools.count())
    mapping: dict[str, str] = {}
    for name in _value_names(graph):
        if name not in public and name not in mapping:
            mapping[name] = next(fresh for fresh in counter if fresh not in public)
    _apply(graph, mapping)
    for index, node in enumerate(node for sub in _graphs(graph) for node in sub.node):
        node.name = f"n{index}"
        node.doc_string = ""
    for sub in _graphs(graph):
        sub.doc_string = ""
    model.doc_string = ""
    _canonical_dims(graph)


def _type_shapes(graph: onnx.GraphProto) -> Iterator[onnx.TensorShapeProto]:
    for sub in _graphs(graph):
        for value in [*sub.input, *sub.output, *sub.value_info]:
            if value.type.HasField("tensor_type") and value.type.tensor_type.HasField("shape"):
                yield value.type.tensor_type.shape


def _canonical_dims(graph: onnx.GraphProto) -> None:
    mapping: dict[str, str] = {BATCH_DIM: BATCH_DIM}
    for shape in _type_shapes(graph):
        for dim in shape.dim:
            if dim.HasField("dim_param") and dim.dim_param not in mapping:
                mapping[dim.dim_param] = f"d{len(mapping) - 1}"
            if dim.HasField("dim_param"):
                dim.dim_param = mapping[dim.dim_param]


def dynamic_batch(model: onnx.ModelProto) -> None:
    """Make dimension 0 of every main-graph input and output the symbolic ``batch``."""
    graph = model.graph
    for value in [*graph_inputs(graph), *graph.output]:
        tensor_type = value.type.tensor_type
        if value.type.HasField("tensor_type") and tensor_type.HasField("shape") and tensor_type.shape.dim:
            tensor_type.shape.dim[0].dim_param = BATCH_DIM
