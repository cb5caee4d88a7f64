"""Latency of ONNX models in the peer runtimes, interleaved: ONNX Runtime (f32, and int8 after
its own static quantization) and OpenVINO (f32 and bf16 inference precision), one thread.

    python scripts/peer_runtimes.py MODEL.onnx [MODEL.onnx ...] [--batch 1] [--rounds 7]
        [--ort-int8 CALIBRATION_IMAGES]

Prints the median milliseconds per configuration. `--ort-int8` quantizes each model with
`onnxruntime.quantization.quantize_static` (QDQ, per-channel int8 weights, uint8 activations,
calibrated on 16 random images) so ORT runs its own int8 kernels: the strongest ORT int8
anchor. Needs `onnxruntime`, `openvino` and `numpy`; used for BENCHMARKS.md only.
"""
import argparse
import os
import tempfile
import time

import numpy as np


def timed(run, budget_s=1.0):
    run()
    times = []
    start = time.perf_counter()
    while time.perf_counter() - start < budget_s or len(times) < 5:
        t = time.perf_counter()
        run()
        times.append((time.perf_counter() - t) * 1e3)
    return float(np.median(times))


def ort_session(path, threads):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def ort_int8(path, shape, out_dir):
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    name = ort_session(path, 1).get_inputs()[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.items = iter([{name: rng.standard_normal(shape).astype(np.float32)}
                               for _ in range(16)])

        def get_next(self):
            return next(self.items, None)

    pre = os.path.join(out_dir, "pre.onnx")
    quant_pre_process(path, pre)
    out = os.path.join(out_dir, "int8.onnx")
    quantize_static(pre, out, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--ort-int8", action="store_true")
    args = ap.parse_args()
    import openvino as ov

    core = ov.Core()
    tmp = tempfile.mkdtemp()
    for path in args.models:
        sess = ort_session(path, args.threads)
        inp = sess.get_inputs()[0]
        shape = [args.batch] + [d if isinstance(d, int) else 1 for d in inp.shape[1:]]
        x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
        runs = {"ort f32": lambda s=sess: s.run(None, {inp.name: x})}
        if args.ort_int8:
            q = ort_session(ort_int8(path, shape, tmp), args.threads)
            runs["ort int8 (own quantization)"] = lambda s=q: s.run(None, {inp.name: x})
        model = core.read_model(path)
        model.reshape({model.inputs[0]: shape})
        for precision in ["f32", "bf16"]:
            compiled = core.compile_model(model, "CPU", {
                "INFERENCE_NUM_THREADS": str(args.threads),
                "INFERENCE_PRECISION_HINT": precision,
                "PERFORMANCE_HINT": "LATENCY",
            })
            req = compiled.create_infer_request()
            runs[f"openvino {precision}"] = lambda r=req: r.infer({0: x})
        results = {k: [] for k in runs}
        for _ in range(args.rounds):
            for k, run in runs.items():
                results[k].append(timed(run))
        print(os.path.basename(path), f"batch {args.batch} threads {args.threads}")
        for k, v in results.items():
            print(f"  {k:28} {np.median(v):8.3f} ms")


if __name__ == "__main__":
    main()
