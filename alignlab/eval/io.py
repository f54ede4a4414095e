"""Reading and writing evaluation files, with errors that name the file, the line and the fix.

An eval file ``<run_dir>/eval/<task>.jsonl`` has one JSON object per line:

    {"id": "math-003", "prompt": "...", "outputs": ["..."], "reference": "...",
     "metrics": {"accuracy": 1.0, "format_reward": 1.0, ...}, "details": {...}}

``id`` (string or integer, unique in the file) and ``metrics`` (an object of numbers; null
means "not scored for this example") are required; other fields are carried along. The summary
``<run_dir>/eval/<task>.summary.json`` holds each metric's mean and 95% bootstrap CI.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Iterable


from alignlab.jsonl import DataError
from alignlab.jsonl import read_jsonl as _read_jsonl


class EvalFileError(DataError):
    """Bad content in an eval or data file; the message names the file and line."""


def read_jsonl(path: str | os.PathLike, required: Iterable[str] = ()) -> list[dict]:
    """JSON objects of a JSONL file (blank lines skipped); each must have the required fields."""
    required = tuple(required)
    try:
        pairs = _read_jsonl(path, hint="each line must be exactly one JSON object")
    except DataError as e:
        raise EvalFileError(str(e)) from None
    rows: list[dict] = []
    for lineno, obj in pairs:
        missing = [k for k in required if k not in obj]
        if missing:
            raise EvalFileError(f"{path}:{lineno}: missing field(s) {', '.join(map(repr, missing))}; "
                                f"every line needs {', '.join(required)}")
        obj["_line"] = lineno
        rows.append(obj)
    return rows


def read_eval_file(path: str | os.PathLike) -> list[dict]:
    """Validated rows of an eval file (see module docstring). Raises EvalFileError naming file:line."""
    p = Path(path)
    rows = read_jsonl(p, required=("id", "metrics"))
    seen: dict = {}
    for row in rows:
        ln = row["_line"]
        rid = row["id"]
        if isinstance(rid, bool) or not isinstance(rid, (str, int)):
            raise EvalFileError(f"{p}:{ln}: 'id' must be a string or an integer, got {rid!r}")
        if rid in seen:
            raise EvalFileError(f"{p}:{ln}: duplicate id {rid!r} (first on line {seen[rid]}); ids must be unique")
        seen[rid] = ln
        m = row["metrics"]
        if not isinstance(m, dict):
            raise EvalFileError(f"{p}:{ln}: 'metrics' must be an object of name -> number")
        for k, v in m.items():
            if v is None:
                continue
            if isinstance(v, bool):
                m[k] = float(v)
            elif not isinstance(v, (int, float)) or (isinstance(v, float) and not math.isfinite(v)):
                raise EvalFileError(f"{p}:{ln}: metric {k!r} must be a finite number or null, got {v!r}")
    return rows


def _public_mode(path: str) -> None:
    """mkstemp creates 0600 files; give the final file the usual rw-r--r--."""
    os.chmod(path, 0o644)


def _clean(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "_line"}


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> Path:
    """Write rows atomically (temporary file in the same folder, then rename)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(_clean(row), ensure_ascii=False, allow_nan=False) + "\n")
        _public_mode(tmp)
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return p


def write_json(path: str | os.PathLike, obj: dict) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")
    _public_mode(tmp)
    os.replace(tmp, p)
    return p


def eval_paths(run_dir: str | os.PathLike, task: str) -> tuple[Path, Path]:
    """(rows file, summary file) of a task's evaluation inside a run directory."""
    d = Path(run_dir) / "eval"
    return d / f"{task}.jsonl", d / f"{task}.summary.json"


METRIC_NAMES = {
    "rougeL": "ROUGE-L", "bertscore_f1": "BERTScore", "fact_f1": "Fact-F1", "exact_match": "exact match",
    "bleu": "BLEU", "codebleu": "CodeBLEU", "syntax_valid": "syntax validity", "harmless": "harmlessness",
    "refused": "refusal rate", "refusal_correct": "refusal accuracy", "accuracy": "accuracy",
    "format_reward": "format reward", "answer_reward": "answer reward",
}


def display_name(metric: str) -> str:
    """How reports name a metric (ROUGE-L, BERTScore, ...); unknown names are shown as they are."""
    return METRIC_NAMES.get(metric, metric)
