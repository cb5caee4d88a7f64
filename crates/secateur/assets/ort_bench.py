"""Peer-runtime latency server for `secateur bench --compare ENGINE` (`--compare-ort`).

usage: ort_bench.py MODEL INPUTS_JSON THREADS [ENGINE]
ENGINE is `ort` (ONNX Runtime, the default), `openvino` (OpenVINO at f32:
INFERENCE_PRECISION_HINT=f32) or `openvino-bf16` (OpenVINO's bf16 execution). INPUTS_JSON lists,
in the graph's order, each input's concrete shape and kind:
[[shape, "float" | "ids" | "mask" | "types"], ...]. The server loads the model with `THREADS`
threads and builds those inputs (random floats; token ids below 100, an attention
mask of ones, zero token types, in the input's own integer type), then reads commands from
stdin: a number N runs the model N times and prints the per-run milliseconds as a JSON list;
`quit` exits. Timing in rounds lets secateur interleave its own runs with ONNX Runtime's in
one process pair, so both see the same machine load.
"""
import json
import sys
import time

import numpy as np

model, inputs, threads = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
engine = sys.argv[4] if len(sys.argv) > 4 else "ort"
rng = np.random.default_rng(0)


def value(shape, kind, dtype):
    if kind == "float":
        return rng.standard_normal(shape).astype(np.float32)
    n = int(np.prod(shape))
    values = {"ids": (np.arange(n) * 31) % 100, "mask": np.ones(n), "types": np.zeros(n)}[kind]
    return values.reshape(shape).astype(dtype)


if engine == "ort":
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    DTYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(bool)": np.bool_}
    feed = {inp.name: value(shape, kind, DTYPES.get(inp.type, np.int64))
            for inp, (shape, kind) in zip(sess.get_inputs(), inputs)}

    def infer():
        sess.run(None, feed)
elif engine in ("openvino", "openvino-bf16"):
    import openvino as ov

    core = ov.Core()
    net = core.read_model(model)
    net.reshape({inp: shape for inp, (shape, _) in zip(net.inputs, inputs)})
    compiled = core.compile_model(net, "CPU", {
        "INFERENCE_NUM_THREADS": str(threads),
        "INFERENCE_PRECISION_HINT": "bf16" if engine == "openvino-bf16" else "f32",
        "PERFORMANCE_HINT": "LATENCY",
    })
    request = compiled.create_infer_request()
    DTYPES = {"i64": np.int64, "i32": np.int32, "boolean": np.bool_}
    feed = {i: value(shape, kind, DTYPES.get(inp.get_element_type().get_type_name(), np.int64))
            for i, (inp, (shape, kind)) in enumerate(zip(net.inputs, inputs))}

    def infer():
        request.infer(feed)
else:
    sys.exit(f"unknown engine '{engine}': expected ort, openvino or openvino-bf16")
infer()
print("ready", flush=True)
for line in sys.stdin:
    cmd = line.strip()
    if cmd == "quit":
        break
    n = int(cmd)
    out = []
    for _ in range(n):
        t = time.perf_counter()
        infer()
        out.append((time.perf_counter() - t) * 1e3)
    print(json.dumps(out), flush=True)
