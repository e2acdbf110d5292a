"""The model server's inference worker (docs/adr/0040). It runs in the sandbox, not in the
trusted runtime: the runtime copies this file into the workload's /algorithm directory
and starts it like a service's python workload (own namespaces, no network but the
ingress bridge, seccomp, cgroup). Standard library, numpy and onnxruntime only (the two
are mounted read-only from the enclave's interpreter, sandbox.RUNTIME_PACKAGES).

It loads /inputs/model.onnx (the runtime checked its SHA-256 against the pinned hash
before starting the sandbox) and answers frames on 127.0.0.1:$PORT: a frame is a 4-byte
big-endian length and that many bytes of JSON. Request ``{"inputs": {NAME: nested
list or raw tensor}, "encoding": "json" | "b64"}``; answer ``{"outputs": {NAME: ...}}``
or ``{"error": TEXT}``; a raw tensor is ``{"dtype", "shape", "b64"}`` (little-endian). Plaintext
inputs exist only here and in the runtime's memory: both inside the enclave.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import socket
import struct
import threading
from typing import Any

import numpy as np
import onnxruntime as ort

MODEL_PATH = "/inputs/model.onnx"
MAX_FRAME = 64 << 20
_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
    "tensor(string)": np.object_,
}


#: Raw tensors (``{"dtype", "shape", "b64"}``, little-endian bytes): numeric types only.
_RAW_DTYPES = ("float32", "float64", "float16", "int64", "int32", "int8", "uint8", "bool")


def _tensor(value: Any, dtype: Any) -> Any:
    """A nested list, or a raw tensor: JSON floats cost more than a small inference."""
    if isinstance(value, dict):
        name = value["dtype"]
        if name not in _RAW_DTYPES:
            raise ValueError(f"raw dtype must be one of {', '.join(_RAW_DTYPES)}")
        data = base64.b64decode(value["b64"], validate=True)
        arr = np.frombuffer(data, dtype=np.dtype(name).newbyteorder("<"))
        return arr.reshape([int(d) for d in value["shape"]]).astype(dtype)
    return np.array(value, dtype=dtype)


def _encode(arr: Any, raw: bool) -> Any:
    if raw and arr.dtype.name in _RAW_DTYPES:
        return {
            "dtype": arr.dtype.name,
            "shape": list(arr.shape),
            "b64": base64.b64encode(arr.astype(arr.dtype.newbyteorder("<")).tobytes()).decode(),
        }
    return arr.tolist()


def _recv_exact(conn: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = conn.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


class Worker:
    def __init__(self, path: str) -> None:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, len(os.sched_getaffinity(0)))
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        self.inputs = {i.name: i.type for i in self.session.get_inputs()}
        self.lock = threading.Lock()

    def infer(self, request: dict[str, Any]) -> dict[str, Any]:
        given = request.get("inputs")
        if not isinstance(given, dict) or set(given) != set(self.inputs):
            return {"error": f"inputs must be exactly {sorted(self.inputs)}"}
        feed: dict[str, Any] = {}
        for name, value in given.items():
            dtype = _DTYPES.get(self.inputs[name])
            if dtype is None:
                return {"error": f"input {name} has unsupported type {self.inputs[name]}"}
            try:
                feed[name] = _tensor(value, dtype)
            except (TypeError, ValueError, KeyError, binascii.Error) as e:
                return {"error": f"input {name} is not a {self.inputs[name]}: {e}"}
        try:
            results = self.session.run(None, feed)
        except Exception as e:  # onnxruntime raises its own exception types
            return {"error": f"inference failed: {str(e)[:500]}"}
        names = [o.name for o in self.session.get_outputs()]
        raw = request.get("encoding") == "b64"
        return {
            "outputs": {n: _encode(np.asarray(r), raw) for n, r in zip(names, results, strict=True)}
        }

    def serve(self, conn: socket.socket) -> None:
        with conn:
            while True:
                head = _recv_exact(conn, 4)
                if head is None:
                    return
                (size,) = struct.unpack(">I", head)
                if size > MAX_FRAME:
                    return
                body = _recv_exact(conn, size)
                if body is None:
                    return
                try:
                    request = json.loads(body)
                    answer = (
                        self.infer(request)
                        if isinstance(request, dict)
                        else {"error": "request must be an object"}
                    )
                except ValueError as e:
                    answer = {"error": f"request is not JSON: {e}"}
                out = json.dumps(answer).encode()
                conn.sendall(struct.pack(">I", len(out)) + out)


def main() -> None:
    worker = Worker(MODEL_PATH)
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", int(os.environ["PORT"])))
    srv.listen(64)
    while True:
        conn, _ = srv.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=worker.serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
