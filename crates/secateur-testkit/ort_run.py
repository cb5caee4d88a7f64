"""Validates an ONNX model with onnx.checker (full check) and runs it in ONNX Runtime.

usage: ort_run.py MODEL OUT_DIR NAME INPUT.bin SHAPE [NAME INPUT.bin SHAPE ...]
Each INPUT.bin holds little-endian float32 values of the comma-separated SHAPE (converted to
the input's declared type when that is an integer or boolean type). Every output is written
to OUT_DIR/<index>.bin, and a JSON list of output shapes is printed on stdout.
"""
import json
import sys

import numpy as np
import onnx
import onnxruntime as ort

model_path, out_dir = sys.argv[1:3]
rest = sys.argv[3:]
onnx.checker.check_model(onnx.load(model_path), full_check=True)
opts = ort.SessionOptions()
opts.intra_op_num_threads = 1
sess = ort.InferenceSession(model_path, opts, providers=["CPUExecutionProvider"])
# integer and boolean inputs (token ids, masks) arrive as exact float values
kinds = {"tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(bool)": np.bool_}
declared = {i.name: i.type for i in sess.get_inputs()}
feed = {}
for k in range(0, len(rest), 3):
    name, path, shape = rest[k : k + 3]
    x = np.fromfile(path, dtype="<f4").reshape([int(d) for d in shape.split(",")])
    feed[name] = x.astype(kinds.get(declared.get(name), np.float32))
outs = sess.run(None, feed)
shapes = []
for i, o in enumerate(outs):
    np.asarray(o, dtype="<f4").tofile(f"{out_dir}/{i}.bin")
    shapes.append(list(o.shape))
print(json.dumps(shapes))
