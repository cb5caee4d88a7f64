"""Builds pydoc-pairs.jsonl: real English sentence pairs from the docstrings of the Python
standard library (PSF License 2.0). Each line pairs the summary line of a documented
function, class or method ("text") with the first following paragraph of the same docstring
("pair"), so a sentence encoder can be scored on retrieval: each summary's nearest paragraph
should be its own.

    python3 make_pydoc_pairs.py > pydoc-pairs.jsonl

The output depends only on the Python version's standard library (3.11.7 for the committed
file); modules and members are visited in sorted order.
"""
import importlib
import inspect
import json
import pkgutil
import re
import sys
import warnings

MODULES = sorted(
    m for m in sys.stdlib_module_names
    if not m.startswith("_") and m not in {"antigravity", "this", "idlelib", "tkinter", "turtle",
                                           "turtledemo", "lib2to3", "ensurepip", "venv"}
)
MAX_PAIRS = 1000


def words(s):
    return len(s.split())


def clean(s):
    return re.sub(r"\s+", " ", s).strip()


def pairs_of(obj):
    doc = inspect.getdoc(obj)
    if not doc:
        return None
    paras = [clean(p) for p in re.split(r"\n\s*\n", doc)]
    if len(paras) < 2:
        return None
    summary, body = paras[0], paras[1]
    if not (4 <= words(summary) <= 30 and 8 <= words(body) <= 80):
        return None
    if any(c in summary + body for c in "|>{}") or "(" in summary[:12] or "::" in body:
        return None
    if not summary[0].isupper() or not body[0].isupper():
        return None
    return summary, body


def main():
    warnings.simplefilter("ignore")
    seen = set()
    out = []
    for name in MODULES:
        try:
            mod = importlib.import_module(name)
        except Exception:
            continue
        members = sorted(inspect.getmembers(mod), key=lambda kv: kv[0])
        objs = []
        for attr, obj in members:
            if attr.startswith("_") or getattr(obj, "__module__", None) != name:
                continue
            objs.append(obj)
            if inspect.isclass(obj):
                for _, meth in sorted(inspect.getmembers(obj, inspect.isfunction), key=lambda kv: kv[0]):
                    if not meth.__name__.startswith("_"):
                        objs.append(meth)
        for obj in objs:
            p = pairs_of(obj)
            if p and p[0] not in seen and p[1] not in seen:
                seen.update(p)
                out.append(p)
    for text, pair in out[:MAX_PAIRS]:
        print(json.dumps({"text": text, "pair": pair}, ensure_ascii=False))


if __name__ == "__main__":
    main()
