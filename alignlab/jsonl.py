"""JSONL reading with errors that name FILE:LINE. Torch-free, so evaluation tools import it cheaply."""
from __future__ import annotations

import json
from pathlib import Path


from .errors import DataError  # noqa: F401  (re-exported: alignlab.jsonl.DataError)


def read_jsonl(path, hint: str = "each line must be one JSON object") -> list[tuple[int, dict]]:
    """(line number, object) for every non-blank line; a bad line raises naming FILE:LINE."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{path}: file not found")
    rows = []
    with p.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{n}: not valid JSON ({exc.msg} at column {exc.colno}); "
                                f"fix or delete this line") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}:{n}: expected a JSON object, got {type(obj).__name__}; {hint}")
            rows.append((n, obj))
    if not rows:
        raise DataError(f"{path}: no examples (empty file)")
    return rows
