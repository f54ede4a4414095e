"""Verifiable math reward: the DeepSeek-R1-Zero format + answer check (arXiv 2501.12948).

The policy is prompted with a text that ends in ``<think>`` (see ``R1_ZERO_PROMPT``), so the
*response* is the continuation: ``"reasoning ... </think> <answer> 42 </answer>"``.

What the format check accepts, exactly
--------------------------------------
``</think>``, then any amount of whitespace (none, one space, a newline), then ``<answer>``,
then any text, then ``</answer>``: the regex ``</think>\\s*<answer>(.*?)</answer>`` (DOTALL),
first match. Text after ``</answer>`` is ignored. Anything else (no ``</think>``, no
``<answer>``, an unclosed answer) has ``format_reward = 0`` and therefore ``reward = 0``.
This is slightly more lenient than the reference implementation, which requires the literal
``"</think> <answer>"`` with exactly one space.

How the answer is graded
------------------------
The text inside ``<answer>`` (with a ``\\boxed{...}`` unwrapped if present) is compared with the
ground truth (a ``#### x`` GSM8K tail and ``\\boxed{}`` are unwrapped there too) by, in order:

1. string equality after ``normalize_answer`` (LaTeX spacing, ``\\dfrac``, ``\\text{}``,
   ``\\left``/``\\right``, dollar signs, thousands separators, trailing periods and units,
   ``\\frac{a}{b}`` -> ``a/b``, ``x = 3`` -> ``3``);
2. ``math_verify.parse`` + ``math_verify.verify`` on both sides wrapped in ``$...$``
   (symbolic and numeric equivalence: ``\\frac{1}{2}`` = ``1/2`` = ``0.5``, ``2\\sqrt{2}`` = ``\\sqrt{8}``);
3. exact rational comparison of the normalised strings when both are plain numbers or fractions.

math-verify's timeouts use ``signal.alarm``, which only works in the main thread; in other
threads the grader runs without a timeout and answers longer than ``MAX_SYMBOLIC_CHARS`` skip the
symbolic step. Any grader exception or timeout counts as a wrong answer and is logged, never
raised.
"""
from __future__ import annotations

import logging
import re
import threading
from fractions import Fraction

logger = logging.getLogger(__name__)

R1_ZERO_PROMPT = (
    "A conversation between User and Assistant. The User asks a question, and the Assistant "
    "solves it. The Assistant first thinks about the reasoning process in the mind and then "
    "provides the User with the answer. The reasoning process is enclosed within <think> </think> "
    "and answer is enclosed within <answer> </answer> tags, respectively, i.e., <think> reasoning "
    "process here </think> <answer> answer here </answer>.\nUser: {question}\nAssistant: <think>"
)

FORMAT_RE = re.compile(r"</think>\s*<answer>(.*?)</answer>", re.DOTALL)
MAX_SYMBOLIC_CHARS = 400
GRADER_TIMEOUT_S = 5


def extract_answer(response: str) -> str | None:
    """Text inside the first ``</think> <answer>...</answer>`` block, or None when malformed."""
    if not isinstance(response, str):
        return None
    m = FORMAT_RE.search(response)
    return m.group(1) if m else None


def _matching_brace(s: str, open_idx: int) -> int:
    """Index of the ``}`` closing the ``{`` at open_idx (backslash-escaped braces ignored), or -1."""
    depth = 0
    i = open_idx
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s) and s[i + 1] in "{}":
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def extract_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` / ``\\fbox{...}`` (nested braces allowed), or None.

    ``\\boxed 5`` (no braces) returns ``"5"``. An unclosed ``\\boxed{`` returns None.
    """
    if not isinstance(text, str):
        return None
    idx = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if idx < 0:
        return None
    rest_start = idx + (len("\\boxed") if text.startswith("\\boxed", idx) else len("\\fbox"))
    rest = text[rest_start:]
    stripped = rest.lstrip()
    if stripped.startswith("{"):
        open_idx = rest_start + (len(rest) - len(stripped))
        close = _matching_brace(text, open_idx)
        if close < 0:
            return None
        return text[open_idx + 1:close]
    if rest.startswith(" "):
        m = re.match(r"\s+([^\s$]+)", rest)
        return m.group(1) if m else None
    return None


def _strip_wrapper(s: str, cmd: str) -> str:
    """Replace ``\\cmd{X}`` by ``X`` everywhere (nested braces handled)."""
    token = "\\" + cmd + "{"
    while True:
        idx = s.find(token)
        if idx < 0:
            return s
        close = _matching_brace(s, idx + len(token) - 1)
        if close < 0:
            return s
        s = s[:idx] + s[idx + len(token):close] + s[close + 1:]


_UNIT_WORDS = (
    "dollars|dollar|cents|cent|units|unit|degrees|degree|meters|meter|metres|metre|cm|mm|km|m|"
    "inches|inch|feet|foot|ft|miles|mile|hours|hour|minutes|minute|seconds|second|days|day|"
    "weeks|week|years|year|kg|g|grams|gram|pounds|pound|lbs|lb|liters|liter|litres|litre|ml|l|"
    "people|students|apples|square units|sq units|mph|percent"
)
_TRAILING_UNIT_RE = re.compile(r"^(-?[\d.,/]+)\s*(?:" + _UNIT_WORDS + r")\.?$")
_THOUSANDS_RE = re.compile(r"(?<![\d.])(\d{1,3}(?:,\d{3})+)(?![\d])")
_FRAC_RE = re.compile(r"\\frac\{([^{}]*)\}\{([^{}]*)\}")
_FRAC_SHORT_RE = re.compile(r"\\frac(\d)(\d)")


def normalize_answer(answer: str) -> str:
    """Canonical string form of a final answer, for string comparison and majority voting.

    Lower-cases, removes LaTeX spacing (``\\,`` ``\\!`` ``\\;`` ``\\:`` ``~``), ``\\left``/``\\right``,
    ``\\displaystyle``, dollar signs, ``\\text{}``/``\\mathrm{}``/``\\mbox{}`` wrappers, degree and percent
    marks, thousands separators, a trailing period and a trailing unit word; rewrites ``\\dfrac`` /
    ``\\tfrac`` / ``\\frac{a}{b}`` to ``a/b`` and ``x = 3`` to ``3``; canonicalises plain numbers
    (``5.0`` -> ``5``, ``0.50`` -> ``0.5``). Never raises.
    """
    if not isinstance(answer, str):
        return ""
    s = answer.strip()
    if "####" in s:
        s = s.split("####")[-1].strip()
    boxed = extract_boxed(s)
    if boxed is not None:
        s = boxed
    s = s.replace("\\$", "").replace("$", "")
    for cmd in ("text", "textbf", "mathrm", "mbox", "mathbf", "operatorname"):
        s = _strip_wrapper(s, cmd)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = s.replace("\\left", "").replace("\\right", "").replace("\\displaystyle", "")
    for sp in ("\\!", "\\,", "\\;", "\\:", "\\ ", "~"):
        s = s.replace(sp, " ")
    s = s.replace("^\\circ", "").replace("^{\\circ}", "").replace("°", "")
    s = s.replace("\\%", "").replace("%", "").replace("\u2212", "-")
    s = _FRAC_SHORT_RE.sub(r"\1/\2", s)
    for _ in range(3):  # innermost fractions first; nested ones need repeats
        s = _FRAC_RE.sub(r"(\1)/(\2)", s)
    s = re.sub(r"\((-?\d+(?:\.\d+)?)\)", r"\1", s)  # (1)/(2) -> 1/2
    s = s.strip().lower()
    s = re.sub(r"\s+", " ", s)
    s = s.rstrip(".").strip()
    s = re.sub(r"^[a-z]\s*=\s*(?=\S)", "", s)  # "x = 3" -> "3"
    s = re.sub(r"^\(([a-e])\)$", r"\1", s)  # "(B)" -> "b" (multiple choice)
    s = _THOUSANDS_RE.sub(lambda m: m.group(1).replace(",", ""), s)
    m = _TRAILING_UNIT_RE.match(s)
    if m:
        s = m.group(1)
    s = s.replace(" ", "") if re.fullmatch(r"[-\d.,/ ()^*+]+", s or "x") else s
    num = _as_fraction(s)
    if num is not None and "/" not in s:
        s = _format_number(num)
    return s


def _as_fraction(s: str) -> Fraction | None:
    """Exact value of ``s`` when it is an integer, decimal or ``a/b`` of those; else None."""
    if not s or len(s) > 60 or not re.fullmatch(r"-?\d*\.?\d+(?:/-?\d*\.?\d+)?", s):
        return None
    try:
        if "/" in s:
            a, b = s.split("/")
            return Fraction(a) / Fraction(b)
        return Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None


def _format_number(x: Fraction) -> str:
    if x.denominator == 1:
        return str(x.numerator)
    return format(float(x), ".15g")


def _math_verify_equal(pred: str, gold: str) -> bool:
    in_main = threading.current_thread() is threading.main_thread()
    if not in_main and max(len(pred), len(gold)) > MAX_SYMBOLIC_CHARS:
        return False  # no timeout is possible off the main thread: refuse huge inputs
    from math_verify import parse, verify  # imported lazily: it pulls in sympy

    t = GRADER_TIMEOUT_S if in_main else None

    def wrap(x: str) -> str:
        x = x.strip().replace("\\$", "").replace("$", "")
        return f"${x}$"

    g = parse(wrap(gold), parsing_timeout=t)
    p = parse(wrap(pred), parsing_timeout=t)
    if not g or not p:
        return False
    return bool(verify(g, p, timeout_seconds=t))


def grade_answer(pred: str, gold: str) -> bool:
    """True when ``pred`` and ``gold`` denote the same answer (see module docstring). Never raises."""
    try:
        if not isinstance(pred, str) or not isinstance(gold, str):
            return False
        if "####" in gold:
            gold = gold.split("####")[-1]
        pb, gb = extract_boxed(pred), extract_boxed(gold)
        pred = pb if pb is not None else pred
        gold = gb if gb is not None else gold
        if not pred.strip() or not gold.strip():
            return False
        np_, ng = normalize_answer(pred), normalize_answer(gold)
        if np_ and np_ == ng:
            return True
        try:
            if _math_verify_equal(pred, gold):
                return True
        except BaseException as e:  # math-verify's TimeoutException derives from BaseException
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                raise
            logger.warning("math grader failed on pred=%.80r gold=%.80r: %s: %s",
                           pred, gold, type(e).__name__, e)
        a, b = _as_fraction(np_), _as_fraction(ng)
        return a is not None and b is not None and a == b
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:
        logger.warning("math grader crashed (%s: %s); scoring as wrong", type(e).__name__, e)
        return False


def r1_zero_reward(response: str, ground_truth: str) -> dict[str, float]:
    """R1-Zero reward: ``{"format_reward", "answer_reward", "reward"}``, each 0.0 or 1.0.

    reward = format_reward * answer_reward; the answer is only graded when the format is right
    (so a malformed response scores 0/0/0). ``ground_truth`` may be a bare answer, a
    ``\\boxed{}`` expression or a GSM8K ``... #### 42`` solution.
    """
    ans = extract_answer(response)
    if ans is None:
        return {"format_reward": 0.0, "answer_reward": 0.0, "reward": 0.0}
    ok = grade_answer(ans, ground_truth)
    return {"format_reward": 1.0, "answer_reward": float(ok), "reward": float(ok)}
