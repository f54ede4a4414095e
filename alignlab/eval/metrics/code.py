"""Code Q&A (CoNaLa-style intent -> Python snippet): exact match, BLEU, CodeBLEU, syntax, pass rate.

Model outputs are first reduced to code by ``extract_code``: the first fenced block
(```python ... ```) when there is one, else the whole text, stripped.

* exact match: equal after ``normalize_code`` (Python tokens joined by single spaces, comments
  and blank lines dropped, so ``sorted(l,key=f)`` == ``sorted(l, key=f)``; string literals
  are kept verbatim). Falls back to whitespace collapsing when the code does not tokenize.
* BLEU: sacrebleu ``sentence_bleu`` (13a tokenization, exp smoothing), divided by 100.
* CodeBLEU (Ren et al. 2020, arXiv 2009.10297): the ``codebleu`` package, language "python",
  equal weights (n-gram, weighted n-gram, AST match, data-flow match). An empty prediction scores
  0 (the package would otherwise credit the degenerate data-flow term).
* syntax validity: ``ast.parse`` succeeds on non-empty code.
* pass rate: the task's tests run against the code in the sandbox (``alignlab.eval.sandbox``);
  see ``build_program`` for how a snippet and its tests are joined.
"""
from __future__ import annotations

import ast
import io
import logging
import re
import tokenize

from alignlab.eval.sandbox import SandboxLimits, SandboxResult, run_many

_FENCE_RE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL | re.IGNORECASE)


def extract_code(text: str) -> str:
    """The first fenced code block of a model output, else the whole output; stripped."""
    if not isinstance(text, str):
        return ""
    m = _FENCE_RE.search(text)
    return (m.group(1) if m else text).strip()


def normalize_code(code: str) -> str:
    """Python tokens joined by single spaces (no comments, indentation tokens or blank lines)."""
    if not isinstance(code, str):
        return ""
    code = code.strip()
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.ENCODING, tokenize.ENDMARKER}
    try:
        toks = []
        for tok in tokenize.generate_tokens(io.StringIO(code).readline):
            if tok.type in skip:
                continue
            if tok.type == tokenize.NEWLINE:
                toks.append("\n")
            elif tok.type in (tokenize.INDENT, tokenize.DEDENT):
                toks.append("<indent>" if tok.type == tokenize.INDENT else "<dedent>")
            elif tok.string:
                toks.append(tok.string)
        return " ".join(toks).replace(" \n", "\n").replace("\n ", "\n").strip()
    except (tokenize.TokenError, IndentationError, SyntaxError, ValueError):
        return " ".join(code.split())


def exact_match(prediction: str, reference: str) -> float:
    p, r = normalize_code(prediction), normalize_code(reference)
    return float(bool(r) and p == r)


def bleu(prediction: str, reference: str) -> float:
    """Sentence BLEU in [0, 1] (sacrebleu, 13a tokenizer, exp smoothing, effective order)."""
    import sacrebleu

    if not prediction.strip() or not reference.strip():
        return 0.0
    return float(sacrebleu.sentence_bleu(prediction, [reference]).score) / 100.0


def codebleu(prediction: str, reference: str) -> float:
    """CodeBLEU in [0, 1] for one snippet (codebleu package, Python grammar)."""
    if not prediction.strip() or not reference.strip():
        return 0.0
    from codebleu import calc_codebleu

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the package warns on every snippet without data flow
    try:
        return float(calc_codebleu([reference], [prediction], lang="python")["codebleu"])
    finally:
        root.setLevel(level)


def syntax_valid(code: str) -> float:
    """1.0 when ``ast.parse`` accepts the (non-empty) code, else 0.0. Never raises."""
    if not isinstance(code, str) or not code.strip():
        return 0.0
    try:
        ast.parse(code)
        return 1.0
    except (SyntaxError, ValueError, MemoryError, RecursionError, OverflowError):
        return 0.0


def build_program(code: str, setup: str = "") -> str:
    """The program the sandbox runs before the tests: ``setup`` then the candidate code.

    A snippet that is a single expression (CoNaLa answers often are) is bound to ``result``
    so tests can check it: ``sorted(l)`` becomes ``result = (sorted(l))``. Statements run as
    written, and tests inspect the names they define or change.
    """
    body = code
    try:
        ast.parse(code, mode="eval")
        if code.strip():
            body = f"result = (\n{code}\n)"
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        pass
    return (setup.rstrip() + "\n\n" if setup and setup.strip() else "") + body + "\n"


def pass_results(codes: list[str], tests: str, setup: str = "", *,
                 limits: SandboxLimits | None = None, workers: int | None = None,
                 unsafe_no_sandbox: bool = False) -> list[SandboxResult]:
    """Run every candidate against the tests in the sandbox (one sandbox per candidate)."""
    jobs = [(build_program(c, setup), tests) for c in codes]
    return run_many(jobs, limits=limits, workers=workers, unsafe_no_sandbox=unsafe_no_sandbox)
