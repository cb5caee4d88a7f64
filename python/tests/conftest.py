"""Shared fixtures: a tiny optimize run (LeNet-5-BN on the embedded Fashion-MNIST sample,
latency modelled on the mobile profile so that runs are comparable across executors)."""

import json
import os
from pathlib import Path

import pytest

import secateur

# small enough for CI (about a minute on two cores), with a front of >= 5 members: no accuracy
# floor (the cheapest models belong to the trade-off too) and no baseline sweep
TINY = dict(
    hardware="mobile",
    dense_epochs=1,
    population=12,
    generations=1,
    search_samples=256,
    val_samples=200,
    final_epochs=1,
    max_final=10,
    max_accuracy_drop=1.0,
    baseline=False,
    seed=0,
)


def summary(front):
    """What must not depend on the executor: each front member's objectives and configuration."""
    return sorted(
        (p.id, tuple(sorted(p.objectives.items())), tuple(sorted(p.configuration.items())))
        for p in front.points
    )


def evaluations(run_dir):
    with open(Path(run_dir) / "evaluations.jsonl") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="session")
def local_front(tmp_path_factory):
    calls = []
    out = tmp_path_factory.mktemp("local") / "run"
    front = secateur.optimize(
        out=out, workers=2, progress=lambda *a: calls.append(a), **TINY
    )
    front.progress_calls = calls
    return front


def require_in_ci(module):
    """Imports `module`, skipping the test when it is missing, except under CI=true."""
    if os.environ.get("CI") == "true":
        return __import__(module)
    return pytest.importorskip(module)
