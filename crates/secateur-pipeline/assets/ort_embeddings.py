"""Outputs of an ONNX sentence encoder in ONNX Runtime.

usage: ort_embeddings.py MODEL OUT.npy NAME=INPUT.npy ...
Each NAME=INPUT.npy gives the graph input NAME (int64 token ids, attention mask or token
types, [N, seq]); the first output of every row is written to OUT.npy as float32 [N, dim].
"""
import sys

import numpy as np
import onnxruntime as ort

model, out = sys.argv[1:3]
feeds = {}
for arg in sys.argv[3:]:
    name, path = arg.split("=", 1)
    feeds[name] = np.load(path)
opts = ort.SessionOptions()
opts.intra_op_num_threads = 1
sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
types = {i.name: i.type for i in sess.get_inputs()}
n = len(next(iter(feeds.values())))
rows = []
for start in range(0, n, 32):
    batch = {}
    for name, x in feeds.items():
        x = x[start:start + 32]
        batch[name] = x.astype(np.int32) if types.get(name) == "tensor(int32)" else x
    y = sess.run(None, batch)[0]
    rows.append(y.reshape(len(y), -1).astype(np.float32))
np.save(out, np.concatenate(rows))
