"""ONNX Runtime latency server for `secateur bench --compare-ort`.

usage: ort_bench.py MODEL BATCH THREADS
Loads the model with `THREADS` intra-op threads and a random input of batch BATCH, then reads
commands from stdin: a number N runs the model N times and prints the per-run milliseconds as
a JSON list; `quit` exits. Timing in rounds lets secateur interleave its own runs with ONNX
Runtime's in one process pair, so both see the same machine load.
"""
import json
import sys
import time

import numpy as np
import onnxruntime as ort

model, batch, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
opts = ort.SessionOptions()
opts.intra_op_num_threads = threads
opts.inter_op_num_threads = 1
opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
inp = sess.get_inputs()[0]
shape = [batch] + [d if isinstance(d, int) else 1 for d in inp.shape[1:]]
x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
feed = {inp.name: x}
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
