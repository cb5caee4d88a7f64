"""Wall time of optimize's search stage (ask / evaluate / tell over every generation) with the
Ray executor on 1 and 2 worker CPUs, and with the local executor on 1 and 2 threads, on this
machine. Needs the package and Ray installed (`pip install . ray`). Latency is modelled on the
mobile profile so that workers running side by side do not disturb what is measured; the
dense model is trained once and shared (each run starts from a copy of its run directory).

    python scripts/ray_scaling.py [--population 12] [--generations 2] [--repeats 1]
"""

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import ray

from secateur import _native
from secateur._ray import RayExecutor


def search_stage(request, executor):
    """Opens the run (dense model and sensitivity reused from disk), then times the search."""
    search = _native.Search(json.dumps(request))
    evaluator = RayExecutor(search) if executor == "ray" else None
    start = time.perf_counter()
    evaluated = 0
    while True:
        batch = search.ask()
        if batch is None:
            break
        todo = json.loads(batch)["todo"]
        evaluated += len(todo)
        if evaluator:
            evaluator.evaluate(todo)
        else:
            search.evaluate_locally()
        search.tell()
    return time.perf_counter() - start, evaluated


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--population", type=int, default=12)
    ap.add_argument("--generations", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    settings = dict(
        hardware="mobile",
        dense_epochs=2,
        population=args.population,
        generations=args.generations,
        baseline=False,
    )
    root = Path(tempfile.mkdtemp(prefix="secateur-scaling-"))
    prepared = root / "prepared"
    # dense model and sensitivity analysis once
    search_stage({"settings": settings, "out": str(prepared), "workers": 2}, "local")
    for name in ("state.json", "evaluations.jsonl"):
        (prepared / name).unlink()
    rows = []
    for repeat in range(args.repeats):
        for executor, cpus in (("ray", 1), ("ray", 2), ("local", 1), ("local", 2)):
            out = root / f"{executor}-{cpus}-{repeat}"
            shutil.copytree(prepared, out)
            if executor == "ray":
                ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
            try:
                request = {"settings": settings, "out": str(out), "workers": cpus}
                seconds, n = search_stage(request, executor)
            finally:
                if executor == "ray":
                    ray.shutdown()
            rows.append((executor, cpus, n, seconds))
            print(f"{executor:5} {cpus} worker(s): {n} evaluations in {seconds:.1f} s", flush=True)
    print("\n| executor | workers | evaluations | search stage s | speed-up over 1 worker |")
    print("|---|---|---|---|---|")
    for executor, cpus, n, seconds in rows:
        one = min(s for e, c, _, s in rows if e == executor and c == 1)
        print(f"| {executor} | {cpus} | {n} | {seconds:.1f} | {one / seconds:.2f}x |")
    shutil.rmtree(root)


if __name__ == "__main__":
    main()
