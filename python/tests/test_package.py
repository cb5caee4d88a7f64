"""The Python package: functions return plain objects, errors raise SecateurError with
secateur's message, optimize returns a front whose files ONNX Runtime runs."""

import json
import subprocess
import sys

import numpy as np
import pytest

import secateur
from conftest import TINY, evaluations, require_in_ci


def run_in_ort(path):
    ort = require_in_ci("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    first = session.get_inputs()[0]
    shape = [d if isinstance(d, int) else 4 for d in first.shape]
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    return session.run(None, {first.name: x})[0]


def test_inspect_returns_the_layers_and_totals():
    s = secateur.inspect("lenet5-bn")
    assert s["total_params"] == sum(l["params"] for l in s["layers"]) > 0
    assert s["total_macs"] > 0


def test_errors_are_python_exceptions_with_secateurs_message(tmp_path):
    missing = tmp_path / "missing.onnx"
    with pytest.raises(secateur.SecateurError, match="missing.onnx"):
        secateur.inspect(missing)
    with pytest.raises(secateur.SecateurError, match="populaton"):
        secateur.optimize(populaton=8)
    with pytest.raises(secateur.SecateurError, match="population"):
        secateur.optimize(population=7, out=tmp_path / "bad")
    with pytest.raises(secateur.SecateurError, match="executor"):
        secateur.optimize(executor="dask", out=tmp_path / "bad2")


def test_prune_writes_a_model_onnx_runtime_runs(tmp_path):
    out = tmp_path / "lenet-50.onnx"
    r = secateur.prune("lenet5-bn", out, sparsity=0.5)
    assert r["file_bytes"] == out.stat().st_size
    assert run_in_ort(out).shape[-1] == 10
    p = secateur.profile(out, hardware="mobile", batch=1)
    assert 0 < p["nonzero_params"] < p["params"]


def test_optimize_returns_a_verified_front_that_onnx_runtime_runs(local_front):
    front = local_front
    assert len(front.points) >= 5, front
    assert front.dense and "accuracy" in front.dense
    assert sum(p.knee for p in front.points) == 1
    for p in front.points:
        assert {"accuracy", "latency_ms", "energy_mj"} <= p.objectives.keys()
        assert p.verified_accuracy == pytest.approx(p.objectives["accuracy"], abs=0.002)
        y = run_in_ort(p.path)
        assert y.shape == (4, 10) and np.isfinite(y).all()
    plain = json.loads(json.dumps(front.as_dict()))
    assert len(plain["points"]) == len(front.points)
    stages = {c[0] for c in front.progress_calls}
    assert {"sensitivity", "final", "verify"} <= stages, stages
    ran = {(e["ran"]["host"], e["ran"]["pid"]) for e in evaluations(front.dir)}
    assert len(ran) == 1, "the local executor evaluates in this process"


def test_a_finished_run_is_resumed_not_redone(local_front):
    again = secateur.optimize(out=local_front.dir, workers=2, **TINY)
    assert again.resumed
    assert [p.id for p in again.points] == [p.id for p in local_front.points]


def test_the_command_line_entry_point_runs_the_same_commands():
    r = subprocess.run(
        [sys.executable, "-m", "secateur.cli", "inspect", "lenet5-bn"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0 and "total" in r.stdout, r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "secateur.cli", "optimize", "--executor", "spark"],
        capture_output=True,
        text=True,
    )
    assert r.returncode != 0 and "spark" in r.stderr


def test_from_torch_hands_a_module_over(tmp_path):
    torch = pytest.importorskip("torch")
    model = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(784, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10)
    )
    path = secateur.from_torch(model, torch.zeros(1, 1, 28, 28), tmp_path / "mlp.onnx")
    assert secateur.inspect(path)["total_params"] == 784 * 32 + 32 + 32 * 10 + 10
