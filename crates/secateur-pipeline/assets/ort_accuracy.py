"""Top-1 accuracy of an ONNX classifier in ONNX Runtime.

usage: ort_accuracy.py MODEL INPUTS.npy LABELS.npy   (prints the accuracy and the predictions as JSON)
INPUTS.npy holds already-normalised float32 samples [N, ...]; LABELS.npy int64 labels [N].
"""
import json
import sys

import numpy as np
import onnxruntime as ort

model, xs, ys = sys.argv[1:4]
x = np.load(xs)
y = np.load(ys)
opts = ort.SessionOptions()
opts.intra_op_num_threads = 1
sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
name = sess.get_inputs()[0].name
preds = []
for i in range(0, len(x), 500):
    out = sess.run(None, {name: x[i:i + 500]})[0]
    preds.extend(int(p) for p in out.argmax(axis=1))
acc = float((np.array(preds) == y).mean())
print(json.dumps({"accuracy": acc, "predictions": preds}))
