"""Writes ONNX models in the style of torch.onnx.export and onnx.helper, with ONNX Runtime's
outputs on a random input, for secateur's import tests.

usage: pytorch_style.py OUT_DIR   (prints a JSON manifest)

Each model exercises something exporters produce: Constant nodes, Identity aliases of
initializers, initializers also listed as graph inputs, the Shape/Gather/Unsqueeze/Concat
chain in front of Reshape, Clip with min/max as inputs, unfused BatchNormalization, dim_param
batch names, Resize in nearest and linear modes, GroupNorm and InstanceNormalization, Tile,
and opsets 11 to 17.
"""
import json
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

rng = np.random.default_rng(0)
out_dir = sys.argv[1]


def w(name, *shape, scale=None):
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    s = scale if scale is not None else 1.0 / np.sqrt(fan_in)
    return numpy_helper.from_array(rng.uniform(-s, s, shape).astype(np.float32), name)


def bn_params(prefix, c):
    return [
        numpy_helper.from_array(rng.uniform(0.5, 1.5, c).astype(np.float32), f"{prefix}.weight"),
        numpy_helper.from_array(rng.uniform(-0.2, 0.2, c).astype(np.float32), f"{prefix}.bias"),
        numpy_helper.from_array(rng.uniform(-0.2, 0.2, c).astype(np.float32), f"{prefix}.running_mean"),
        numpy_helper.from_array(rng.uniform(0.5, 1.5, c).astype(np.float32), f"{prefix}.running_var"),
    ]


def bn(prefix, x, y):
    return helper.make_node(
        "BatchNormalization",
        [x, f"{prefix}.weight", f"{prefix}.bias", f"{prefix}.running_mean", f"{prefix}.running_var"],
        [y], name=prefix, epsilon=1e-5, momentum=0.9)


def const_i64(name, values):
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.array(values, dtype=np.int64), name))


def lenet_view_reshape(opset):
    """x.view(x.size(0), -1) as old torch exports write it."""
    nodes = [
        helper.make_node("Conv", ["input", "conv1.weight", "conv1.bias"], ["c1"], name="Conv_0", kernel_shape=[5, 5], pads=[0, 0, 0, 0], strides=[1, 1], dilations=[1, 1], group=1),
        bn("BatchNormalization_1", "c1", "b1"),
        helper.make_node("Relu", ["b1"], ["r1"], name="Relu_2"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="MaxPool_3", kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 0, 0], ceil_mode=0),
        helper.make_node("Shape", ["p1"], ["s"], name="Shape_4"),
        const_i64("idx0", 0),
        helper.make_node("Gather", ["s", "idx0"], ["n"], name="Gather_5", axis=0),
    ]
    if opset >= 13:
        nodes += [const_i64("axes0", [0]), helper.make_node("Unsqueeze", ["n", "axes0"], ["n1"], name="Unsqueeze_6")]
    else:
        nodes += [helper.make_node("Unsqueeze", ["n"], ["n1"], name="Unsqueeze_6", axes=[0])]
    nodes += [
        const_i64("minus1", [-1]),
        helper.make_node("Concat", ["n1", "minus1"], ["target"], name="Concat_7", axis=0),
        helper.make_node("Reshape", ["p1", "target"], ["flat"], name="Reshape_8"),
        helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"], name="Gemm_9", alpha=1.0, beta=1.0, transB=1),
    ]
    inits = [w("conv1.weight", 4, 1, 5, 5), w("conv1.bias", 4, scale=0.1)] + bn_params("BatchNormalization_1", 4) + [
        w("fc.weight", 10, 4 * 6 * 6), w("fc.bias", 10, scale=0.1)]
    g = helper.make_graph(nodes, "lenet_view", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch_size", 1, 16, 16])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch_size", 10])], inits)
    return g, [1, 16, 16]


def mobilenet_block(opset):
    """Inverted residual: 1x1 expand, depthwise 3x3, Clip(0, 6) with constant inputs, project, Add."""
    c, h = 8, 32
    nodes = [
        helper.make_node("Conv", ["input", "expand.weight"], ["e"], name="Conv_0", kernel_shape=[1, 1], group=1),
        bn("bn0", "e", "eb"),
        helper.make_node("Constant", [], ["zero"], value=numpy_helper.from_array(np.array(0.0, dtype=np.float32))),
        helper.make_node("Constant", [], ["six"], value=numpy_helper.from_array(np.array(6.0, dtype=np.float32))),
        helper.make_node("Clip", ["eb", "zero", "six"], ["er"], name="Clip_1"),
        helper.make_node("Conv", ["er", "dw.weight"], ["d"], name="Conv_2", kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=h),
        bn("bn1", "d", "db"),
        helper.make_node("Clip", ["db", "zero", "six"], ["dr"], name="Clip_3"),
        helper.make_node("Conv", ["dr", "project.weight"], ["p"], name="Conv_4", kernel_shape=[1, 1]),
        bn("bn2", "p", "pb"),
        helper.make_node("Add", ["pb", "input"], ["sum"], name="Add_5"),
        helper.make_node("GlobalAveragePool", ["sum"], ["gap"], name="GlobalAveragePool_6"),
        helper.make_node("Flatten", ["gap"], ["f"], name="Flatten_7", axis=1),
        helper.make_node("Gemm", ["f", "fc.weight", "fc.bias"], ["logits"], name="Gemm_8", transB=1),
    ]
    inits = [w("expand.weight", h, c, 1, 1), w("dw.weight", h, 1, 3, 3), w("project.weight", c, h, 1, 1),
             w("fc.weight", 5, c), w("fc.bias", 5, scale=0.1)] + bn_params("bn0", h) + bn_params("bn1", h) + bn_params("bn2", c)
    g = helper.make_graph(nodes, "mobilenet_block", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", c, 8, 8])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 5])], inits)
    return g, [c, 8, 8]


def mlp_old_style(opset):
    """Initializers listed as graph inputs, an Identity alias of a weight, MatMul + Add, Softmax."""
    nodes = [
        helper.make_node("Flatten", ["input"], ["x"], name="", axis=1),
        helper.make_node("Identity", ["fc1.weight"], ["fc1.weight_alias"]),
        helper.make_node("MatMul", ["x", "fc1.weight_alias"], ["h0"]),
        helper.make_node("Add", ["h0", "fc1.bias"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h2"]),
        helper.make_node("Dropout", ["h2"], ["h3"]),
        helper.make_node("Gemm", ["h3", "fc2.weight", "fc2.bias"], ["z"], transB=0),
        helper.make_node("Softmax", ["z"], ["probs"], axis=1),
    ]
    inits = [w("fc1.weight", 48, 20, scale=0.15), w("fc1.bias", 20, scale=0.1), w("fc2.weight", 20, 7, scale=0.2), w("fc2.bias", 7, scale=0.1)]
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 3, 4, 4])]
    inputs += [helper.make_tensor_value_info(t.name, TensorProto.FLOAT, list(t.dims)) for t in inits]
    g = helper.make_graph(nodes, "mlp_old", inputs, [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [None, 7])], inits)
    return g, [3, 4, 4]


def resnet_concat(opset):
    """Residual add and a channel concat with an average pool (count_include_pad) and ceil_mode."""
    nodes = [
        helper.make_node("Conv", ["input", "a.weight", "a.bias"], ["a"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["ar"]),
        helper.make_node("Conv", ["ar", "b.weight", "b.bias"], ["b"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["b", "ar"], ["s"]),
        helper.make_node("Conv", ["s", "c.weight"], ["c"], kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER"),
        helper.make_node("AveragePool", ["s"], ["ap"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=1, ceil_mode=1),
        helper.make_node("Concat", ["c", "ap"], ["cat"], axis=1),
        helper.make_node("Sigmoid", ["cat"], ["sg"]),
        helper.make_node("Mul", ["cat", "sg"], ["silu"]),
        helper.make_node("MaxPool", ["silu"], ["mp"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["mp"], ["f"]),
        helper.make_node("Gemm", ["f", "fc.weight", "fc.bias"], ["logits"], transB=1),
    ]
    inits = [w("a.weight", 6, 3, 3, 3), w("a.bias", 6, scale=0.1), w("b.weight", 6, 6, 3, 3), w("b.bias", 6, scale=0.1),
             w("c.weight", 5, 6, 3, 3), w("fc.weight", 4, 11 * 2 * 2), w("fc.bias", 4, scale=0.1)]
    g = helper.make_graph(nodes, "resnet_concat", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 9, 9])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4])], inits)
    return g, [3, 9, 9]


def resize_chain(opset):
    """nn.Upsample / F.interpolate as exporters write them: nearest doubling by scales
    (asymmetric, floor), bilinear to sizes with half-pixel centres, align_corners, a downscale
    with round_prefer_ceil and pytorch_half_pixel."""
    f32 = lambda name, v: numpy_helper.from_array(np.array(v, dtype=np.float32), name)
    nodes = [helper.make_node("Conv", ["input", "a.weight", "a.bias"], ["a"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])]
    inits = [w("a.weight", 4, 3, 3, 3), w("a.bias", 4, scale=0.1), f32("up2", [1, 1, 2, 2]),
             f32("roi", [])]
    inits += [numpy_helper.from_array(np.array([2, 4, 7, 9], dtype=np.int64), "s79"),
              numpy_helper.from_array(np.array([2, 4, 13, 5], dtype=np.int64), "s135"),
              f32("down", [1, 1, 0.5, 0.75]), f32("noscale", [])]
    nodes += [
        helper.make_node("Resize", ["a", "roi", "up2"], ["r1"], mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
        helper.make_node("Resize", ["r1", "roi", "noscale", "s79"], ["r2"], mode="linear", coordinate_transformation_mode="half_pixel"),
        helper.make_node("Resize", ["r2", "roi", "noscale", "s135"], ["r3"], mode="linear", coordinate_transformation_mode="align_corners"),
        helper.make_node("Resize", ["r3", "roi", "down"], ["r4"], mode="nearest", nearest_mode="round_prefer_ceil"),
        helper.make_node("Resize", ["r4", "roi", "up2"], ["out"], mode="linear", coordinate_transformation_mode="pytorch_half_pixel"),
    ]
    return _resize_graph(nodes, inits, [3, 5, 6], [4, 12, 6])


def _resize_graph(nodes, inits, shape, out):
    g = helper.make_graph(nodes, "resize_chain", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch"] + shape)],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch"] + out)], inits)
    return g, shape


def group_norm(opset):
    """GroupNorm(2, 4) as torch exports it (InstanceNormalization of x.reshape(N, 2, -1) with
    unit scale and zero shift, the affine map after reshaping back), then an
    InstanceNormalization with its own scale and shift."""
    i64 = lambda name, v: numpy_helper.from_array(np.array(v, dtype=np.int64), name)
    f32 = lambda name, v: numpy_helper.from_array(np.array(v, dtype=np.float32), name)
    nodes = [
        helper.make_node("Conv", ["input", "a.weight", "a.bias"], ["a"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Reshape", ["a", "groups"], ["g"]),
        helper.make_node("InstanceNormalization", ["g", "ones", "zeros"], ["gn"], epsilon=1e-5),
        helper.make_node("Reshape", ["gn", "back"], ["b"]),
        helper.make_node("Mul", ["b", "gamma"], ["bs"]),
        helper.make_node("Add", ["bs", "beta"], ["ba"]),
        helper.make_node("InstanceNormalization", ["ba", "in.scale", "in.bias"], ["out"], epsilon=1e-3),
    ]
    inits = [w("a.weight", 4, 3, 3, 3), w("a.bias", 4, scale=0.1), i64("groups", [0, 2, -1]),
             i64("back", [0, 4, 5, 6]), f32("ones", [1, 1]), f32("zeros", [0, 0]),
             w("gamma", 4, 1, 1, scale=1.5), w("beta", 4, 1, 1, scale=0.5),
             w("in.scale", 4, scale=2.0), w("in.bias", 4, scale=0.5)]
    g = helper.make_graph(nodes, "group_norm", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 5, 6])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 4, 5, 6])], inits)
    return g, [3, 5, 6]


def tile(opset):
    """Tile of an activation by constant repeats (channels twice, width three times)."""
    nodes = [
        helper.make_node("Conv", ["input", "a.weight", "a.bias"], ["a"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Tile", ["a", "reps"], ["out"]),
    ]
    inits = [w("a.weight", 4, 3, 3, 3), w("a.bias", 4, scale=0.1),
             numpy_helper.from_array(np.array([1, 2, 1, 3], dtype=np.int64), "reps")]
    g = helper.make_graph(nodes, "tile", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 5, 6])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 8, 5, 18])], inits)
    return g, [3, 5, 6]


manifest = []
cases = [(lenet_view_reshape, 11), (lenet_view_reshape, 13), (mobilenet_block, 12), (mobilenet_block, 17),
         (mlp_old_style, 11), (resnet_concat, 14), (resnet_concat, 17), (resize_chain, 11),
         (resize_chain, 13), (resize_chain, 17), (group_norm, 13), (group_norm, 17),
         (tile, 17)]
for i, (make, opset) in enumerate(cases):
    graph, shape = make(opset)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="pytorch")
    model.ir_version = 7 if opset < 15 else 8
    onnx.checker.check_model(model, full_check=True)
    path = f"{out_dir}/{make.__name__}_op{opset}.onnx"
    onnx.save(model, path)
    x = rng.standard_normal([2] + shape).astype(np.float32)
    y = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    x.astype("<f4").tofile(path + ".in.bin")
    y.astype("<f4").tofile(path + ".out.bin")
    manifest.append({"path": path, "input": [2] + shape, "output": list(y.shape)})
print(json.dumps(manifest))
