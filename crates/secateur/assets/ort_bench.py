"""ONNX Runtime latency server for `secateur bench --compare-ort`.

usage: ort_bench.py MODEL INPUTS_JSON THREADS
INPUTS_JSON lists, in the graph's order, each input's concrete shape and kind:
[[shape, "float" | "ids" | "mask" | "types"], ...]. The server loads the model with `THREADS`
intra-op threads and builds those inputs (random floats; token ids below 100, an attention
mask of ones, zero token types, in the input's own integer type), then reads commands from
stdin: a number N runs the model N times and prints the per-run milliseconds as a JSON list;
`quit` exits. Timing in rounds lets secateur interleave its own runs with ONNX Runtime's in
one process pair, so both see the same machine load.
"""
import json
import sys
import time

import numpy as np
import onnxruntime as ort

model, inputs, threads = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
opts = ort.SessionOptions()
opts.intra_op_num_threads = threads
opts.inter_op_num_threads = 1
opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
DTYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(bool)": np.bool_}
rng = np.random.default_rng(0)
feed = {}
for inp, (shape, kind) in zip(sess.get_inputs(), inputs):
    if kind == "float":
        x = rng.standard_normal(shape).astype(np.float32)
    else:
        n = int(np.prod(shape))
        values = {"ids": (np.arange(n) * 31) % 100, "mask": np.ones(n), "types": np.zeros(n)}[kind]
        x = values.reshape(shape).astype(DTYPES.get(inp.type, np.int64))
    feed[inp.name] = x
sess.run(None, feed)
print("ready", flush=True)
for line in sys.stdin:
    cmd = line.strip()
    if cmd == "quit":
        break
    n = int(cmd)
    out = []
    for _ in range(n):
        t = time.perf_counter()
        sess.run(None, feed)
        out.append((time.perf_counter() - t) * 1e3)
    print(json.dumps(out), flush=True)
