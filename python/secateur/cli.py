"""The ``secateur`` command of the Python package: the same command line as the Rust binary,
run in this process, plus ``optimize --executor ray [--ray-address ADDR]``, which this entry
point drives (the search's ask/tell loop here, the candidates on the Ray cluster)."""

from __future__ import annotations

import json
import sys
from typing import List, Optional

from . import _native


def main(argv: Optional[List[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "optimize" and "--executor" in " ".join(args).replace("=", " ").split():
        parsed = json.loads(_native.optimize_request(args[1:]))
        if parsed["executor"] == "ray":
            from ._api import _run

            def show(stage: str, done: int, total: int, message: str) -> None:
                print(f"{stage} {done}/{total} {message}", file=sys.stderr)

            try:
                front = _run(parsed["request"], "ray", parsed["ray_address"], show)
            except _native.SecateurError as e:
                print(f"error: {e}", file=sys.stderr)
                return 1
            for p in front.points:
                values = " ".join(f"{k}={v:.4g}" for k, v in sorted(p.objectives.items()))
                print(f"{p.id}{'*' if p.knee else ''}  {values}  {p.label}")
            print(f"report: {front.dir}/report.html")
            if front.unmet:
                print(f"error: {front.unmet}", file=sys.stderr)
                return 1
            return 0
    return _native.cli(args)


if __name__ == "__main__":
    sys.exit(main())
