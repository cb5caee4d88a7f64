"""The Ray executor on a local cluster: candidates evaluated by several worker processes, a
worker killed mid-search, a driver stopped mid-batch; the front equals the local executor's."""

import json
import os
import signal
from pathlib import Path

import pytest

import secateur
from secateur import _native
from conftest import TINY, evaluations, require_in_ci, summary

ray = require_in_ci("ray")


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def evaluating_workers():
    """Process ids of Ray workers running an evaluation now (their title names the task)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if cmdline.startswith(b"ray::evaluate_candidate"):
                pids.append(int(entry.name))
    return pids


def test_front_equals_the_local_one_with_a_worker_killed(cluster, local_front, tmp_path):
    killed = []

    def progress(stage, done, total, message):
        if stage == "evaluate" and not killed:
            for pid in evaluating_workers():
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                break

    front = secateur.optimize(out=tmp_path / "ray", executor="ray", progress=progress, **TINY)
    assert killed, "no worker was running an evaluation when one finished"
    assert summary(front) == summary(local_front)
    assert front.hypervolume == pytest.approx(local_front.hypervolume, abs=1e-12)
    ran = evaluations(front.dir)
    processes = {(e["ran"]["host"], e["ran"]["pid"]) for e in ran}
    assert len(processes) >= 2, processes
    assert all(e["ran"]["wall_s"] > 0 for e in ran)
    assert len(ran) == len(evaluations(local_front.dir))


def test_a_driver_stopped_mid_batch_resumes_from_the_run_directory(cluster, local_front, tmp_path):
    from secateur._ray import RayExecutor

    out = tmp_path / "resumed"
    request = {"settings": TINY, "out": str(out), "workers": 2}
    search = _native.Search(json.dumps(request))
    todo = json.loads(search.ask())["todo"]
    RayExecutor(search, None, None).evaluate(todo[:3])
    del search  # the driver goes away without closing the batch
    assert len(evaluations(out)) == 3

    front = secateur.optimize(out=out, executor="ray", **TINY)
    assert summary(front) == summary(local_front)
    assert len(evaluations(out)) == len(evaluations(local_front.dir)), "nothing evaluated twice"
