#!/usr/bin/env python3
"""Writes the committed seed corpus of the fuzz targets (fuzz/corpus/<target>/).

Small hand-built files that reach the parsers' harder paths: a QDQ int8 convolution with
per-channel INT8 weights and a UINT8 activation zero point, a convolution with auto_pad
SAME_UPPER and strides 2, an INT8 activation with zero point 0 (which must not import as
UINT8), NPY arrays of every supported dtype and both byte orders, IDX image and label files
(plain and gzipped), a CIFAR-10 record, and the bundled recipes and hardware profiles. The
real exported models under crates/secateur-onnx/tests/fixtures/real are passed as a second,
read-only corpus directory (see FUZZING.md) rather than copied.

Needs numpy and onnx (the project's .venv has both): .venv/bin/python fuzz/make_seeds.py
"""
import gzip
import io
import os
import shutil
import struct

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")


def out(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def model(nodes, inits, x_shape, y_name="y"):
    g = helper.make_graph(
        nodes,
        "seed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info(y_name, TensorProto.FLOAT, None)],
        initializer=inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    return m.SerializeToString()


def qdq_conv():
    rng = np.random.default_rng(0)
    w = rng.integers(-127, 127, size=(4, 2, 3, 3), dtype=np.int8)
    inits = [
        numpy_helper.from_array(w, "w_q"),
        numpy_helper.from_array(np.full(4, 0.02, np.float32), "w_scale"),
        numpy_helper.from_array(np.zeros(4, np.int8), "w_zp"),
        numpy_helper.from_array(np.array(0.05, np.float32), "x_scale"),
        numpy_helper.from_array(np.array(128, np.uint8), "x_zp"),
    ]
    nodes = [
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["w"], axis=0),
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zp"], ["xd"]),
        helper.make_node("Conv", ["xd", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["y"]),
    ]
    return model(nodes, inits, ["N", 2, 8, 8])


def signed_activation():
    inits = [
        numpy_helper.from_array(np.array(0.1, np.float32), "s"),
        numpy_helper.from_array(np.array(0, np.int8), "zp"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["y"]),
    ]
    return model(nodes, inits, ["N", 3, 4, 4])


def same_pad_conv():
    w = np.ones((3, 3, 3, 3), np.float32) / 27
    nodes = [
        helper.make_node(
            "Conv", ["x", "w"], ["c"], auto_pad="SAME_UPPER", strides=[2, 2]
        ),
        helper.make_node("MaxPool", ["c"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p"], ["y"]),
    ]
    return model(nodes, [numpy_helper.from_array(w, "w")], ["N", 3, 9, 9])


def npy_bytes(a):
    b = io.BytesIO()
    np.save(b, a)
    return b.getvalue()


def idx(dims, data):
    b = struct.pack(">BBBB", 0, 0, 8, len(dims)) + b"".join(struct.pack(">I", d) for d in dims)
    return b + bytes(data)


def main():
    if os.path.isdir(CORPUS):
        shutil.rmtree(CORPUS)
    for target in ("onnx_import", "onnx_run"):
        out(target, "qdq_conv.onnx", qdq_conv())
        out(target, "int8_activation.onnx", signed_activation())
        out(target, "same_pad_conv.onnx", same_pad_conv())
    rng = np.random.default_rng(1)
    arrays = {
        "f32.npy": rng.standard_normal((2, 3)).astype(np.float32),
        "f64_be.npy": rng.standard_normal((3,)).astype(">f8"),
        "u8_images.npy": rng.integers(0, 255, (2, 4, 4), dtype=np.uint8),
        "i64_labels.npy": np.array([0, 3, 9], np.int64),
        "i32_be.npy": np.array([1, 2], ">i4"),
        "i8.npy": np.array([-1, 5], np.int8),
        "bool.npy": np.array([True, False]),
    }
    for name, a in arrays.items():
        out("npy", name, npy_bytes(a))
    images = idx([2, 3, 3], range(18))
    labels = idx([2], [1, 7])
    out("idx", "images.idx", images)
    out("idx", "labels.idx", labels)
    out("idx", "images.idx.gz", gzip.compress(images, mtime=0))
    out("cifar", "one_record.bin", bytes([3]) + bytes(i % 256 for i in range(3072)))
    for d, target in (("recipes", "recipe"), ("crates/secateur-cost/profiles", "profile")):
        for f in sorted(os.listdir(os.path.join(ROOT, d))):
            if f.endswith(".toml"):
                with open(os.path.join(ROOT, d, f), "rb") as src:
                    out(target, f, src.read())
    out(
        "settings",
        "full.toml",
        b'objectives = ["accuracy", "latency", "energy", "bytes"]\n'
        b'constraints = ["latency<=2ms", "accuracy>=0.88"]\n'
        b'hardware = "host"\nbatch = 64\npopulation = 12\ngenerations = 5\n'
        b'val_from = "auto"\nlr = 0.002\nint8 = true\nscreen_pool = 4\n',
    )


if __name__ == "__main__":
    main()
