"""secateur: multi-objective neural-network pruning.

Hand it a trained model (ONNX, a Hugging Face checkpoint or a built-in architecture) and data;
it returns a Pareto front of pruned and optionally int8 models trading accuracy against
latency, energy per inference and size, each measured and exported as ONNX.

    import secateur
    front = secateur.optimize(budget=24, out="runs/lenet")
    for p in front.points:
        print(p.id, p.objectives["accuracy"], p.path)

Every function takes the settings of the command line under underscored names; errors raise
``secateur.SecateurError`` with secateur's message.
"""

from ._native import SecateurError
from ._native import version as _version
from ._api import (
    Front,
    FrontPoint,
    bench,
    cli,
    from_torch,
    inspect,
    optimize,
    profile,
    prune,
)

__version__ = _version()

__all__ = [
    "Front",
    "FrontPoint",
    "SecateurError",
    "bench",
    "cli",
    "from_torch",
    "inspect",
    "optimize",
    "profile",
    "prune",
    "__version__",
]
