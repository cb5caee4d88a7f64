"""The Ray executor: the driver keeps the ask/tell loop (and the run directory); each
candidate is evaluated as a Ray task on whatever cluster ``ray.init`` connects to.

The run's worker context (settings, dense model, search data; a few MB) is put in the object
store once and handed to tasks by reference inside a list, so Ray does not resolve it per
task: each worker process fetches it once (from its node's object store, which receives it
once per node) and keeps the unpacked evaluator for the rest of the run. A task whose worker
process dies is retried by Ray (``max_retries``); each evaluation is recorded in the run
directory as soon as it returns, so a driver killed mid-run resumes as with the local
executor. ``evaluations.jsonl`` records the host, process and wall time of each evaluation.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Dict, List, Optional

from . import _native

# evaluators unpacked in this (worker) process, by object id of their context
_WORKERS: Dict[str, Any] = {}

# a task whose worker process dies is run again, up to this many times
MAX_RETRIES = 4


def _evaluator(context_ref_box: List[Any]) -> Any:
    import ray

    ref = context_ref_box[0]
    key = ref.hex()
    worker = _WORKERS.get(key)
    if worker is None:
        _WORKERS.clear()  # one run at a time per process: drop an earlier run's context
        worker = _native.Worker(ray.get(ref))
        _WORKERS[key] = worker
    return worker


def evaluate_candidate(context_ref_box: List[Any], genome: List[float]) -> str:
    """Runs in a Ray worker: the evaluation of one genome, as JSON."""
    return _evaluator(context_ref_box).evaluate(genome)


class RayExecutor:
    """Evaluates the batches of one search as Ray tasks."""

    def __init__(
        self,
        search: Any,
        address: Optional[str] = None,
        progress: Optional[Callable[[str, int, int, str], None]] = None,
    ) -> None:
        try:
            import ray
        except ImportError as e:
            raise _native.SecateurError(
                "executor='ray' needs Ray installed (pip install 'ray>=2.9')"
            ) from e
        self._ray = ray
        if not ray.is_initialized():
            ray.init(address=address, log_to_driver=False)
        self._search = search
        self._progress = progress
        self._context = ray.put(search.worker_context())
        self._task = ray.remote(num_cpus=1, max_retries=MAX_RETRIES)(evaluate_candidate)

    def evaluate(self, todo: List[List[float]]) -> None:
        """Evaluates every genome of ``todo``, recording each result as it arrives."""
        ray = self._ray
        pending = [self._task.remote([self._context], g) for g in todo]
        done = 0
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayTaskError as e:
                    raise _native.SecateurError(
                        f"a candidate's evaluation failed on the Ray cluster: {e}"
                    ) from e
                self._search.record(result)
                done += 1
                if self._progress is not None:
                    ran = json.loads(result).get("ran") or {}
                    self._progress(
                        "evaluate",
                        done,
                        len(todo),
                        f"evaluated on {ran.get('host', '?')} (pid {ran.get('pid', '?')})",
                    )
