"""The package's functions: command-line subcommands as calls returning plain Python objects,
and ``optimize`` driving the search's stages with the local or the Ray executor."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

from . import _native

PathLike = Union[str, "os.PathLike[str]"]
Progress = Callable[[str, int, int, str], None]

# settings whose command-line flag is phrased as the opposite
_NEGATED_FLAGS = {"int8": "no-int8", "bf16": "no-bf16", "baseline": "no-baseline"}


def _flags(options: Dict[str, Any]) -> List[str]:
    """Keyword arguments as command-line flags: ``sparsity=0.9`` -> ``--sparsity 0.9``,
    ``json=True`` -> ``--json``, lists joined by commas, ``None`` and ``False`` left out."""
    out: List[str] = []
    for name, value in options.items():
        if value is None:
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            if value:
                out.append(flag)
        elif isinstance(value, (list, tuple)):
            out += [flag, ",".join(str(v) for v in value)]
        else:
            out += [flag, os.fspath(value) if isinstance(value, os.PathLike) else str(value)]
    return out


def _command(args: List[str], progress: Optional[Progress] = None) -> List[Any]:
    return json.loads(_native.command_json(args, progress))


def _model_arg(model: PathLike) -> str:
    return os.fspath(model)


def cli(args: Sequence[str]) -> int:
    """Runs ``secateur ARGS...`` in this process (output on stdout/stderr); the exit status."""
    return _native.cli([str(a) for a in args])


def inspect(model: PathLike) -> Dict[str, Any]:
    """Ops, output shapes, parameters and MACs per layer and in total."""
    return _command(["inspect", _model_arg(model)])[0]


def prune(
    model: PathLike, out: PathLike, *, progress: Optional[Progress] = None, **options: Any
) -> Dict[str, Any]:
    """Prunes ``model`` into ``out`` (ONNX) with the options of ``secateur prune``
    (``sparsity=0.9``, ``structured="channels"``, ``ratio=0.5``, ``data="fashion-mnist-mini"``,
    ``finetune_epochs=1``, ``recipe="recipes/x.toml"``...). Returns the recipe, what was
    removed, accuracies before and after, MACs and the bytes of the file written."""
    args = ["prune", _model_arg(model), "--out", os.fspath(out)] + _flags(options)
    return _command(args, progress)[0]


def profile(model: PathLike, **options: Any) -> Dict[str, Any]:
    """Per-layer and total parameters, MACs, bytes, energy and latency on a hardware profile
    (``hardware="mobile"``, ``batch=1``...)."""
    return _command(["profile", _model_arg(model)] + _flags(options))[0]


def bench(*models: PathLike, **options: Any) -> List[Dict[str, Any]]:
    """Latency of each model in secateur's runtime (``batch="1,16"``, ``threads=1``,
    ``compare_ort=True``, ``budget_ms=500``...): one result per model and configuration."""
    if not models:
        raise _native.SecateurError("bench needs at least one model")
    results = _command(["bench"] + [_model_arg(m) for m in models] + _flags(options))
    return results[0] if len(results) == 1 and isinstance(results[0], list) else results


@dataclass
class FrontPoint:
    """A member of the Pareto front: an exported model and its measured objectives."""

    id: str
    label: str
    objectives: Dict[str, float]
    path: Optional[str]
    knee: bool = False
    verified_accuracy: Optional[float] = None
    configuration: Dict[str, str] = field(default_factory=dict)


@dataclass
class Front:
    """The outcome of ``optimize``: the front (``points``), the dense model it started from
    (``dense``), hypervolumes of the search and of the uniform-ratio baseline, the run
    directory (``report.html``, ``front.json``, the models) and the full report."""

    points: List[FrontPoint]
    dense: Optional[Dict[str, float]]
    hypervolume: float
    baseline_hypervolume: float
    dir: str
    unmet: Optional[str]
    resumed: bool
    report: Dict[str, Any] = field(repr=False, default_factory=dict)

    def as_dict(self) -> Dict[str, Any]:
        """The front as plain lists and dictionaries (for JSON, pandas, ...)."""
        return asdict(self)

    @classmethod
    def _from_outcome(cls, outcome: Dict[str, Any]) -> "Front":
        report = outcome["report"]
        run_dir = outcome["dir"]
        points = []
        for p in report["points"]:
            if not p.get("on_front"):
                continue
            verification = p.get("verification") or {}
            path = p.get("model_path")
            points.append(
                FrontPoint(
                    id=p["id"],
                    label=p["label"],
                    objectives=dict(p["values"]),
                    path=os.path.join(run_dir, path) if path else None,
                    knee=bool(p.get("knee")),
                    verified_accuracy=verification.get("checked_accuracy"),
                    configuration=dict(p.get("genome") or {}),
                )
            )
        return cls(
            points=points,
            dense=report.get("dense"),
            hypervolume=report["front_hypervolume"],
            baseline_hypervolume=report["baseline_hypervolume"],
            dir=run_dir,
            unmet=outcome.get("unmet"),
            resumed=bool(outcome.get("resumed")),
            report=report,
        )


def optimize(
    model: Optional[PathLike] = None,
    data: Optional[str] = None,
    *,
    out: PathLike = "secateur-out",
    fresh: bool = False,
    workers: Optional[int] = None,
    config: Optional[PathLike] = None,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
    tokenizer: Optional[PathLike] = None,
    executor: str = "local",
    ray_address: Optional[str] = None,
    progress: Optional[Progress] = None,
    **settings: Any,
) -> Front:
    """The main job: a Pareto front of pruned / int8 / ensembled variants of ``model`` (an
    .onnx file taken as trained, or a built-in name trained first; default ``lenet5-bn``) on
    ``data`` (default the embedded ``fashion-mnist-mini``). With a text set (``.jsonl`` or
    ``.txt``) ``model`` is a sentence encoder (an .onnx file or a Hugging Face checkpoint
    directory) whose heads and FFN neurons are searched, scored by agreement with the dense
    model (``text_score="task"``: the set's task score); ``tokenizer`` is its
    tokenizer.json when not next to the model.

    ``settings`` are those of ``secateur optimize`` and its TOML file, underscored:
    ``objectives=["accuracy", "latency"]``, ``constraints=["latency<=2ms"]``, ``hardware``,
    ``energy_hardware``, ``batch``, ``budget``, ``population``, ``generations``, ``seed``,
    ``search_samples``, ``search_epochs``, ``val_samples``, ``val_from``, ``final_epochs``,
    ``dense_epochs``, ``lr``, ``distill``, ``int8``, ``bf16``, ``remove_blocks``, ``ensemble_size``,
    ``ensemble_pool``, ``baseline``, ``max_final``, ``round_to``, ``sensitivity_drop``,
    ``max_accuracy_drop``, ``screen_pool``, ``threads``, ``text_score``; ``config`` is a TOML file they
    override. ``executor="ray"`` evaluates the candidates as Ray tasks on the cluster
    ``ray.init(address=ray_address)`` connects to. A run interrupted at any point resumes
    from ``out``. ``progress(stage, done, total, message)`` is called as the run advances.
    """
    request: Dict[str, Any] = {"settings": settings, "out": os.fspath(out), "fresh": fresh}
    if model is not None:
        request["model"] = _model_arg(model)
    if data is not None:
        request["data"] = data
    if workers is not None:
        request["workers"] = workers
    if config is not None:
        request["config"] = os.fspath(config)
    if mean is not None:
        request["mean"] = list(mean)
    if std is not None:
        request["std"] = list(std)
    if tokenizer is not None:
        request["tokenizer"] = os.fspath(tokenizer)
    return _run(request, executor, ray_address, progress)


def _run(
    request: Dict[str, Any],
    executor: str,
    ray_address: Optional[str],
    progress: Optional[Progress],
) -> Front:
    if executor not in ("local", "ray"):
        raise _native.SecateurError(f"executor must be 'local' or 'ray', got {executor!r}")
    search = _native.Search(json.dumps(request), progress)
    if executor == "ray":
        from ._ray import RayExecutor

        evaluator = RayExecutor(search, ray_address, progress)
    while True:
        batch = search.ask()
        if batch is None:
            break
        todo = json.loads(batch)["todo"]
        if executor == "ray":
            evaluator.evaluate(todo)
        else:
            search.evaluate_locally()
        line = search.tell()
        if progress is not None:
            progress("search", 1, 1, line)
    return Front._from_outcome(json.loads(search.finish()))


def from_torch(
    module: Any,
    example_input: Any,
    path: Optional[PathLike] = None,
    *,
    opset: int = 17,
    input_names: Optional[List[str]] = None,
    output_names: Optional[List[str]] = None,
) -> str:
    """Exports a PyTorch module with ``torch.onnx.export`` (TorchScript exporter, opset 17,
    batch dimension dynamic) and returns the ONNX path, ready for ``prune``, ``optimize``...
    PyTorch is not a dependency of secateur: this needs it installed."""
    try:
        import torch
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise _native.SecateurError(
            "secateur.from_torch needs PyTorch installed (pip install torch)"
        ) from e
    if path is None:
        path = Path("secateur-models") / f"{type(module).__name__.lower()}.onnx"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    inputs = example_input if isinstance(example_input, tuple) else (example_input,)
    input_names = input_names or [f"input{i}" if i else "input" for i in range(len(inputs))]
    output_names = output_names or ["output"]
    axes = {n: {0: "batch"} for n in input_names + output_names}
    was_training = module.training
    module.eval()
    tmp = path.with_name(path.name + ".partial")
    try:
        kwargs: Dict[str, Any] = dict(
            opset_version=opset,
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=axes,
        )
        try:
            torch.onnx.export(module, inputs, str(tmp), dynamo=False, **kwargs)
        except TypeError:  # PyTorch before the `dynamo` argument
            torch.onnx.export(module, inputs, str(tmp), **kwargs)
        os.replace(tmp, path)
    finally:
        module.train(was_training)
        if tmp.exists():
            tmp.unlink()
    return str(path)
