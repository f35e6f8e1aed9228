"""Data-only checkpoint files: one ``.npz`` archive holding the arrays and a JSON document.

A checkpoint never holds code: :func:`write` stores nested dicts, lists, tuples, numbers,
strings, ``None`` and numpy arrays (numeric dtypes only; a lists of equally shaped arrays is
stacked into one), and :func:`read` opens the archive with ``allow_pickle=False``, so loading a
checkpoint cannot run anything (a pickle-based file, as hhld wrote before, is refused). Anything
else given to :func:`write` raises ``TypeError`` naming where it is.

Layout: the array named ``__json__`` is the JSON document (a 0-d unicode array); every other
array is referenced from it as ``{"__nd__": "a3"}``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["write", "read", "FORMAT"]

#: the format tag written into every checkpoint
FORMAT = "hhld-checkpoint-npz-json/1"


def _encode(obj: Any, arrays: dict, where: str):
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject or obj.dtype.kind not in "biufcSU":
            raise TypeError(f"{where}: an array of dtype {obj.dtype} cannot go into a data-only checkpoint")
        key = f"a{len(arrays)}"
        arrays[key] = obj
        return {"__nd__": key}
    if isinstance(obj, np.generic):
        return _encode(obj.item(), arrays, where)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, arrays, f"{where}[{i}]") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        if obj and all(isinstance(v, np.ndarray) for v in obj) and len({(v.shape, v.dtype.str) for v in obj}) == 1:
            ref = _encode(np.stack(obj), arrays, where)
            return {"__ndlist__": ref["__nd__"]}
        return [_encode(v, arrays, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _encode(v, arrays, f"{where}[{k!r}]") for k, v in obj.items()}
        return {"__map__": [[_encode(k, arrays, f"{where} key"), _encode(v, arrays, f"{where}[{k!r}]")]
                            for k, v in obj.items()]}
    raise TypeError(f"{where}: a value of type {type(obj).__name__} cannot go into a data-only checkpoint "
                    f"(numbers, strings, None, lists, tuples, dicts and numeric numpy arrays only)")


def _decode(obj: Any, arrays):
    if isinstance(obj, list):
        return [_decode(v, arrays) for v in obj]
    if isinstance(obj, dict):
        if "__nd__" in obj:
            return arrays[obj["__nd__"]]
        if "__ndlist__" in obj:
            return list(arrays[obj["__ndlist__"]])
        if "__tuple__" in obj:
            return tuple(_decode(v, arrays) for v in obj["__tuple__"])
        if "__map__" in obj:
            return {_decode(k, arrays): _decode(v, arrays) for k, v in obj["__map__"]}
        return {k: _decode(v, arrays) for k, v in obj.items()}
    return obj


def write(path, payload: dict) -> Path:
    """Write ``payload`` to ``path`` atomically (a temporary file, then a rename)."""
    path = Path(path)
    arrays: dict = {}
    doc = {"format": FORMAT, "payload": _encode(payload, arrays, "checkpoint")}
    text = json.dumps(doc, allow_nan=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "wb") as fh:  # a file object: numpy adds no ".npz" to the name
        np.savez(fh, __json__=np.array(text), **arrays)
    os.replace(tmp, path)
    return path


def read(path) -> dict:
    """The payload of a checkpoint written by :func:`write` (no pickle is ever loaded)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            if "__json__" not in z.files:
                raise ValueError("it has no __json__ document")
            doc = json.loads(str(z["__json__"][()]))
            arrays = {k: z[k] for k in z.files if k != "__json__"}
    except (OSError, ValueError, json.JSONDecodeError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ValueError(f"{path} is not an hhld checkpoint (npz + JSON): {exc}. Checkpoints written with "
                         f"pickle by older hhld versions are not loaded, since loading them could run code") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"{path} has checkpoint format {doc.get('format') if isinstance(doc, dict) else doc!r}, "
                         f"expected {FORMAT!r}")
    return _decode(doc["payload"], arrays)
