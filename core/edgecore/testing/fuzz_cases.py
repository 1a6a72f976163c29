"""Hostile models for the fuzzing harness: valid seed models and the mutations that break them.

A case is a folder's worth of files (``model.onnx``, sometimes external data beside it) made from a
seed model by one mutation with a seeded random generator, so every case can be rebuilt from
``(seed model, mutation, seed)``. Mutations cover what a file from anywhere may hold: truncation,
flipped bytes, huge and negative dims, wrong element types, bogus opsets, missing inputs, cycles,
tensors that claim 10^12 elements, subgraphs nested 100 deep, malformed external data, attributes
out of range, and valid models that ask the runtime for terabytes at run time.
"""

from __future__ import annotations

import functools
import random
from typing import Callable

import attrs
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgecore.testing.graphs import OP_CASES, make_model, nonzero_model, topk_model, unknown_dims_model

__all__ = ["FuzzCase", "MUTATIONS", "SEEDS", "make_case", "seed_model"]

Files = dict[str, bytes]
Mutation = Callable[[onnx.ModelProto, random.Random], Files]


@attrs.frozen(kw_only=True)
class FuzzCase:
    """One hostile input: ``files`` to write into an empty folder; the model is ``model.onnx``."""

    name: str
    seed_model: str
    mutation: str
    seed: int
    files: Files = attrs.field(repr=False, eq=False)

    @property
    def size(self) -> int:
        return sum(len(data) for data in self.files.values())


# -- seed models -----------------------------------------------------------------------------------


def _if_model() -> onnx.ModelProto:
    """``y = x * 2 if sum(x) > 0 else x - 1``: control flow with subgraphs."""
    then = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["t"])], "then", [], [helper.make_tensor_value_info("t", 1, ["batch", 4])],
        [numpy_helper.from_array(np.array(2, np.float32), "two")],
    )
    other = helper.make_graph(
        [helper.make_node("Sub", ["x", "one"], ["e"])], "else", [], [helper.make_tensor_value_info("e", 1, ["batch", 4])],
        [numpy_helper.from_array(np.array(1, np.float32), "one")],
    )
    nodes = [
        helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
        helper.make_node("Greater", ["s", "zero"], ["c"]),
        helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other),
    ]
    zero = numpy_helper.from_array(np.array(0, np.float32), "zero")
    return make_model(nodes, [helper.make_tensor_value_info("x", 1, ["batch", 4])],
                      [helper.make_tensor_value_info("y", 1, ["batch", 4])], [zero], "if")


def _loop_model() -> onnx.ModelProto:
    """A Loop running ``n`` (an int64 input) times, adding 1 to a carried value each time."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Add", ["v_in", "one"], ["v_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []), helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_in", 1, [3])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), helper.make_tensor_value_info("v_out", 1, [3])],
        [numpy_helper.from_array(np.ones(3, np.float32), "one")],
    )
    node = helper.make_node("Loop", ["n", "cond", "v"], ["y"], body=body)
    inits = [numpy_helper.from_array(np.array(True), "cond")]
    return make_model([node], [helper.make_tensor_value_info("n", TensorProto.INT64, []),
                               helper.make_tensor_value_info("v", 1, [3])],
                      [helper.make_tensor_value_info("y", 1, [3])], inits, "loop")


def _zoo(name: str) -> onnx.ModelProto:
    from edgecore.selection import load_graph

    return load_graph(f"zoo:{name}").to_proto()


#: seed name -> builder of a valid model
SEEDS: dict[str, Callable[[], onnx.ModelProto]] = {
    "zoo:mobilenet_v2_tiny": functools.partial(_zoo, "mobilenet_v2_tiny"),
    "zoo:bert_tiny": functools.partial(_zoo, "bert_tiny"),
    "conv": OP_CASES["Conv"].build,
    "mlp": OP_CASES["MLP"].build,
    "reshape": OP_CASES["Reshape"].build,
    "topk": topk_model,
    "nonzero": nonzero_model,
    "minus_one": unknown_dims_model,
    "if": _if_model,
    "loop": _loop_model,
}


@functools.lru_cache(maxsize=None)
def _seed_bytes(name: str) -> bytes:
    return SEEDS[name]().SerializeToString()


def seed_model(name: str) -> onnx.ModelProto:
    """A fresh copy of seed model ``name``."""
    return onnx.ModelProto.FromString(_seed_bytes(name))


# -- mutations -------------------------------------------------------------------------------------


def _model(model: onnx.ModelProto) -> Files:
    return {"model.onnx": model.SerializeToString()}


def _values(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    return [v for v in (*model.graph.input, *model.graph.output) if v.type.HasField("tensor_type")]


def truncate(model: onnx.ModelProto, rng: random.Random) -> Files:
    data = model.SerializeToString()
    return {"model.onnx": data[: rng.randrange(1, len(data))]}


def flip_bytes(model: onnx.ModelProto, rng: random.Random) -> Files:
    data = bytearray(model.SerializeToString())
    for _ in range(rng.randint(1, 16)):
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    return {"model.onnx": bytes(data)}


def garbage(model: onnx.ModelProto, rng: random.Random) -> Files:
    return {"model.onnx": bytes(rng.randrange(256) for _ in range(rng.randint(1, 4096)))}


def _set_dim(model: onnx.ModelProto, rng: random.Random, value: int) -> Files:
    candidates = [v for v in _values(model) if v.type.tensor_type.shape.dim]
    if candidates:
        dims = rng.choice(candidates).type.tensor_type.shape.dim
        dim = dims[rng.randrange(len(dims))]
        dim.Clear()
        dim.dim_value = value
    return _model(model)


def huge_dim(model: onnx.ModelProto, rng: random.Random) -> Files:
    return _set_dim(model, rng, rng.choice([10**12, 2**62, 2**31 + 1]))


def negative_dim(model: onnx.ModelProto, rng: random.Random) -> Files:
    return _set_dim(model, rng, rng.choice([-1, -7, -(2**62)]))


def wrong_elem_type(model: onnx.ModelProto, rng: random.Random) -> Files:
    elem = rng.choice([0, 2, 7, 8, 9, 10, 11, 16, 17, 23, 24, 31, 999])
    target = rng.choice(["value", "initializer"] if model.graph.initializer else ["value"])
    if target == "value":
        rng.choice(_values(model)).type.tensor_type.elem_type = elem
    else:
        rng.choice(model.graph.initializer).data_type = elem
    return _model(model)


def bogus_opset(model: onnx.ModelProto, rng: random.Random) -> Files:
    opset = model.opset_import[0]
    choice = rng.randrange(4)
    if choice == 0:
        opset.version = rng.choice([0, 1, 999, 2**40, -3])
    elif choice == 1:
        opset.domain = "ai.onnx.bogus"
    elif choice == 2:
        del model.opset_import[:]
    else:
        model.ir_version = rng.choice([0, 1, 99, -1])
    return _model(model)


def missing_input(model: onnx.ModelProto, rng: random.Random) -> Files:
    del model.graph.input[rng.randrange(len(model.graph.input))]
    return _model(model)


def cycle(model: onnx.ModelProto, rng: random.Random) -> Files:
    nodes = model.graph.node
    i = rng.randrange(len(nodes))
    j = rng.randrange(i, len(nodes))
    if nodes[i].input and nodes[j].output:
        nodes[i].input[rng.randrange(len(nodes[i].input))] = nodes[j].output[0]
    return _model(model)


def claim_huge_tensor(model: onnx.ModelProto, rng: random.Random) -> Files:
    if model.graph.initializer:
        tensor = rng.choice(model.graph.initializer)
        del tensor.dims[:]
        tensor.dims.extend([10**6, 10**6])
    else:
        model.graph.initializer.append(TensorProto(name="huge", data_type=1, dims=[10**6, 10**6], raw_data=b"\0" * 8))
    return _model(model)


def drop_shapes(model: onnx.ModelProto, rng: random.Random) -> Files:
    for value in _values(model):
        value.type.tensor_type.ClearField("shape")
    return _model(model)


def bad_attribute(model: onnx.ModelProto, rng: random.Random) -> Files:
    attributes = [a for n in model.graph.node for a in n.attribute if a.type in (1, 2, 6, 7)]
    if attributes:
        attr = rng.choice(attributes)
        value = rng.choice([-1, 0, 2**31, -(2**31), 10**9])
        if attr.type == onnx.AttributeProto.INT:
            attr.i = value
        elif attr.type == onnx.AttributeProto.FLOAT:
            attr.f = float(rng.choice([float("nan"), float("inf"), -1e30, 0.0]))
        elif attr.type == onnx.AttributeProto.INTS and attr.ints:
            attr.ints[rng.randrange(len(attr.ints))] = value
        elif attr.type == onnx.AttributeProto.FLOATS and attr.floats:
            attr.floats[rng.randrange(len(attr.floats))] = float("nan")
    return _model(model)


def wrong_op(model: onnx.ModelProto, rng: random.Random) -> Files:
    node = rng.choice(model.graph.node)
    node.op_type = rng.choice(["Conv", "Gemm", "Reshape", "Loop", "Scan", "Frobnicate", "", "If", "Split", "Resize"])
    return _model(model)


def duplicate_output(model: onnx.ModelProto, rng: random.Random) -> Files:
    if len(model.graph.node) >= 2:
        a, b = rng.sample(range(len(model.graph.node)), 2)
        model.graph.node[a].output[0] = model.graph.node[b].output[0]
    return _model(model)


def no_outputs(model: onnx.ModelProto, rng: random.Random) -> Files:
    del model.graph.output[:]
    return _model(model)


def huge_runtime_allocation(model: onnx.ModelProto, rng: random.Random) -> Files:
    """A valid model whose run asks for ~4 TB (ConstantOfShape of a shape given as an input)."""
    nodes = [helper.make_node("ConstantOfShape", ["shape"], ["big"]), helper.make_node("ReduceSum", ["big"], ["y"], keepdims=0)]
    huge = make_model(nodes, [helper.make_tensor_value_info("shape", TensorProto.INT64, [2])],
                      [helper.make_tensor_value_info("y", 1, [])], name="alloc")
    huge.graph.initializer.append(numpy_helper.from_array(np.array([10**6, 10**6], np.int64), "shape"))
    return _model(huge)


def malformed_external_data(model: onnx.ModelProto, rng: random.Random) -> Files:
    initializers = [t for t in model.graph.initializer if t.raw_data or t.float_data]
    if not initializers:
        return _model(model)
    tensor = rng.choice(initializers)
    data = numpy_helper.to_array(tensor).tobytes()
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    entries = {"location": "weights.bin", "offset": "0", "length": str(len(data))}
    key, value = rng.choice(
        [("location", "w\0.bin"), ("location", "/etc/passwd"), ("location", "../x.bin"), ("location", "x" * 5000),
         ("offset", "-8"), ("offset", "eight"), ("length", str(10**12)), ("length", "-1"), ("length", "1"),
         ("offset", str(2**70)), ("location", "")]
    )
    entries[key] = value
    for k, v in entries.items():
        entry = tensor.external_data.add()
        entry.key, entry.value = k, v
    return {"model.onnx": model.SerializeToString(), "weights.bin": data}


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    tag, length = (number << 3) | 2, len(payload)
    out = bytearray([tag]) if tag < 128 else bytearray([(tag & 0x7F) | 0x80, tag >> 7])
    while True:
        byte = length & 0x7F
        length >>= 7
        out.append(byte | (0x80 if length else 0))
        if not length:
            return bytes(out) + payload


def nested_if(depth: int) -> Mutation:
    """``depth`` If nodes, each in the then-branch of the one above (written as raw protobuf: the
    Python protobuf library refuses to build what it cannot parse)."""

    def mutate(model: onnx.ModelProto, rng: random.Random) -> Files:
        value = helper.make_tensor_value_info
        inner = helper.make_graph([helper.make_node("Identity", ["x"], ["o0"])], "b0", [], [value("o0", 1, [2])])
        body = inner.SerializeToString()
        for level in range(1, depth + 1):
            other = helper.make_graph([helper.make_node("Identity", ["x"], [f"e{level}"])], f"e{level}", [], [value(f"e{level}", 1, [2])])
            then_attr = onnx.AttributeProto(name="then_branch", type=onnx.AttributeProto.GRAPH).SerializeToString() + _field(6, body)
            else_attr = helper.make_attribute("else_branch", other).SerializeToString()
            node = helper.make_node("If", ["c"], [f"o{level}"]).SerializeToString() + _field(5, then_attr) + _field(5, else_attr)
            out = value(f"o{level}", 1, [2]).SerializeToString()
            body = _field(1, node) + _field(2, f"b{level}".encode()) + _field(12, out)
        main = helper.make_graph([], "main", [value("x", 1, [2]), value("c", TensorProto.BOOL, [])], [])
        graph = main.SerializeToString() + body  # the nodes and output of the deepest wrapper, merged in
        header = helper.make_model(helper.make_graph([], "h", [], []), opset_imports=[helper.make_opsetid("", 17)])
        header.ir_version = 9
        header.ClearField("graph")
        return {"model.onnx": header.SerializeToString() + _field(7, graph)}

    return mutate


def identity(model: onnx.ModelProto, rng: random.Random) -> Files:
    return _model(model)


#: mutation name -> function(model, rng) -> files
MUTATIONS: dict[str, Mutation] = {
    "none": identity,
    "truncate": truncate,
    "flip_bytes": flip_bytes,
    "garbage": garbage,
    "huge_dim": huge_dim,
    "negative_dim": negative_dim,
    "wrong_elem_type": wrong_elem_type,
    "bogus_opset": bogus_opset,
    "missing_input": missing_input,
    "cycle": cycle,
    "claim_1e12_elements": claim_huge_tensor,
    "drop_shapes": drop_shapes,
    "bad_attribute": bad_attribute,
    "wrong_op": wrong_op,
    "duplicate_output": duplicate_output,
    "no_outputs": no_outputs,
    "huge_runtime_allocation": huge_runtime_allocation,
    "malformed_external_data": malformed_external_data,
    "nested_if_25": nested_if(25),
    "nested_if_100": nested_if(100),
}


def make_case(seed_name: str, mutation: str, seed: int) -> FuzzCase:
    """The case ``mutation`` makes of seed model ``seed_name`` with random seed ``seed``."""
    rng = random.Random(f"{seed_name}/{mutation}/{seed}")
    files = MUTATIONS[mutation](seed_model(seed_name), rng)
    return FuzzCase(name=f"{mutation}[{seed_name}#{seed}]", seed_model=seed_name, mutation=mutation, seed=seed, files=files)
