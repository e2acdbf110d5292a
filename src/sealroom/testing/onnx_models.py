"""Small real ONNX models built with ``onnx.helper`` (tests and benchmarks; nothing is
downloaded): a two-layer MLP and a bag-of-words text classifier (string tokens through
``ai.onnx.ml.CategoryMapper``, an embedding ``Gather``, mean, a linear layer, ``ArgMax``).
Weights come from a seeded generator, so a model's bytes (and hash) are reproducible."""

from __future__ import annotations

import random
from pathlib import Path

import onnx
from onnx import TensorProto, helper

OPSET = 17
ML_OPSET = 3


def _floats(rng: random.Random, n: int) -> list[float]:
    return [rng.uniform(-1.0, 1.0) for _ in range(n)]


def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def mlp(path: Path, *, n_in: int = 4, hidden: int = 8, n_out: int = 3, seed: int = 1) -> Path:
    """``x`` float[N, n_in] -> ``y`` float[N, n_out]: relu(x W1 + b1) W2 + b2."""
    rng = random.Random(seed)  # noqa: S311 - reproducible weights, not secrets
    inits = [
        helper.make_tensor("W1", TensorProto.FLOAT, [n_in, hidden], _floats(rng, n_in * hidden)),
        helper.make_tensor("b1", TensorProto.FLOAT, [hidden], _floats(rng, hidden)),
        helper.make_tensor("W2", TensorProto.FLOAT, [hidden, n_out], _floats(rng, hidden * n_out)),
        helper.make_tensor("b2", TensorProto.FLOAT, [n_out], _floats(rng, n_out)),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h2"]),
        helper.make_node("MatMul", ["h2", "W2"], ["y0"]),
        helper.make_node("Add", ["y0", "b2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", n_in])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", n_out])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    return _save(model, path)


POSITIVE = ("good", "great", "fine", "love", "excellent")
NEGATIVE = ("bad", "awful", "poor", "hate", "terrible")


def text_classifier(path: Path) -> Path:
    """``tokens`` string[T] -> ``label`` int64[1] (1 positive, 0 negative) and ``scores``
    float[1, 2]. Unknown words map to a neutral embedding."""
    vocab = [*POSITIVE, *NEGATIVE]
    dim = 2
    emb: list[float] = [0.0, 0.0]  # index 0: unknown
    for w in vocab:
        emb += [1.0, 0.0] if w in POSITIVE else [0.0, 1.0]
    inits = [
        helper.make_tensor("E", TensorProto.FLOAT, [len(vocab) + 1, dim], emb),
        # scores = mean(emb) @ W: column 0 negative, column 1 positive
        helper.make_tensor("W", TensorProto.FLOAT, [dim, 2], [0.0, 1.0, 1.0, 0.0]),
    ]
    nodes = [
        helper.make_node(
            "CategoryMapper",
            ["tokens"],
            ["ids"],
            domain="ai.onnx.ml",
            cats_strings=vocab,
            cats_int64s=list(range(1, len(vocab) + 1)),
            default_int64=0,
        ),
        helper.make_node("Gather", ["E", "ids"], ["vecs"], axis=0),
        helper.make_node("ReduceMean", ["vecs"], ["mean"], axes=[0], keepdims=1),
        helper.make_node("MatMul", ["mean", "W"], ["scores"]),
        helper.make_node("ArgMax", ["scores"], ["label"], axis=1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "text-classifier",
        [helper.make_tensor_value_info("tokens", TensorProto.STRING, ["T"])],
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, [1]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 2]),
        ],
        inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[
            helper.make_opsetid("", OPSET),
            helper.make_opsetid("ai.onnx.ml", ML_OPSET),
        ],
    )
    model.ir_version = 8
    return _save(model, path)
