"""Heuristic rewards for text: toxicity, length penalty, repetition penalty, and their combination.

Pure functions of a string (plus plain arguments); no torch, no network. Every score has a fixed,
documented range that holds for any input (empty, unicode, very long, all caps):

    toxicity_score(text)         in [0, 1]    0 = no lexicon hit; 1 - prod_hits(1 - severity)
    length_penalty(text, ...)    in [-1, 0]   0 inside the target band, linear outside, clipped
    repetition_penalty(text, n)  in [-1, 0]   -(fraction of n-gram occurrences that repeat an earlier one)
    heuristic_reward(text)       in [-1, 1]   clip(1 - 2 w_t tox + w_l len + w_r rep, -1, 1)

Text normalisation before matching (all scores): Unicode NFKC (full-width and compatibility forms
fold to ASCII: "ＩＤＩＯＴ" -> "IDIOT"), zero-width characters removed, then ``casefold()``
(so matching is case-insensitive, "IDIOT" == "idiot"). Lexicon entries are matched as whole words:
each regex is wrapped in ``(?<!\\w)...(?!\\w)``, so "skill" never matches "kill" and
"classic" never matches anything. Not handled on purpose: leetspeak ("1d10t"), spaced letters
("i d i o t") and context (quotation, negation: "you are not an idiot" still scores). This is a
keyword filter with known limits, meant as a cheap shaping signal next to a learned reward model,
not as a moderation system. See docs/rewards.md.
"""
from __future__ import annotations

import math
import re
import unicodedata

# ----------------------------------------------------------------------------------------------
# Toxicity lexicon. Each category: (severity in (0, 1], regex fragments). Fragments are written
# for casefolded, NFKC-normalised text; the word-boundary guards are added when compiling.
# Phrases are used wherever a single word has common benign uses ("kill the process",
# "take out the trash", "shoot me an email"), which trades recall for fewer false positives.
# ----------------------------------------------------------------------------------------------
_YOU = r"(?:you|u|ya|him|her)"
_THREAT_VERB = r"(?:kill|murder|stab|shoot|strangle|choke|punch|slap|poison)"

LEXICON: dict[str, tuple[float, list[str]]] = {
    # Name-calling and contempt aimed at a person.
    "insult": (0.6, [
        r"idiots?", r"idiotic", r"morons?", r"moronic", r"imbeciles?", r"stupid(?:est)?", r"dumb(?:ass|er|est)?",
        r"dimwits?", r"halfwits?", r"nitwits?", r"numbskulls?", r"losers?", r"pathetic", r"worthless",
        r"buffoons?", r"cretins?", r"scumbags?", r"bozos?", r"airheads?",
        r"(?:you|a|an|such a|what a|total|complete|big|bunch of)(?: \w+)? (?:jerks?|fools?|clowns?)",
        r"piece of (?:garbage|trash|crap|junk)", r"you(?:'re| are) (?:so )?(?:useless|hopeless|disgusting)",
        r"(?:ugly|fat|lazy) (?:pig|cow|slob)",
    ]),
    # Threats of violence against a person, and violent intent.
    "threat": (0.9, [
        rf"{_THREAT_VERB} {_YOU}",
        rf"(?:i'?ll|i will|i'm going to|i am going to|gonna|going to) (?:kill|hurt|murder|stab|shoot) (?:you|u|him|her|them)",
        r"beat (?:you|him|her|them) up", r"break your (?:face|legs?|neck|arms?|skull|jaw)",
        r"you(?:'re| are) (?:dead|going to die|gonna die)", r"watch your back", r"i know where you live",
        r"you(?:'ll| will) regret (?:this|it)",
    ]),
    # Mild, generic dehumanising terms for people (the category that real slurs would occupy in a
    # production lexicon; no actual slurs are listed here).
    "dehumanizing": (0.8, [
        r"subhumans?", r"vermin", r"savages", r"degenerates?", r"lowlifes?", r"scum of the earth",
        r"(?:those|these|you|such) people are (?:animals|vermin|parasites|savages|subhuman|trash|garbage)",
        r"waste of (?:space|oxygen|air|skin)",
    ]),
    # Encouraging self-harm or suicide.
    "self_harm": (0.9, [
        r"kill (?:yourself|urself|ur self)", r"kys", r"end (?:your|ur) (?:own )?life", r"hang yourself",
        r"go die", r"you should (?:just )?die", r"drop dead", r"cut yourself", r"starve yourself",
        r"keep (?:cutting|hurting|harming|starving) yourself",
        r"nobody would (?:miss|care about) you", r"(?:the )?world (?:would be|is) better (?:off )?without you",
        r"you (?:don't|do not) deserve to live",
    ]),
    # Hostile dismissal and bullying that is not name-calling.
    "harassment": (0.5, [
        r"shut up", r"stfu", r"shut your (?:mouth|face)", r"(?:nobody|no one|no-one) (?:likes|wants|asked) you",
        r"nobody asked", r"who asked you", r"get lost", r"screw you", r"go to hell", r"get a life",
        r"you make me sick", r"stop (?:whining|crying)", r"(?:go )?cry about it",
    ]),
    # Mild profanity: low severity; a tone signal, not abuse by itself.
    "profanity": (0.3, [
        r"damn(?:ed|it)?", r"crap(?:py)?", r"wtf", r"bloody hell", r"what the hell", r"screw this",
    ]),
}

CATEGORIES: tuple[str, ...] = tuple(LEXICON)
_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"))
_COMPILED = {c: re.compile(r"(?<!\w)(?:" + "|".join(f"(?:{p})" for p in pats) + r")(?!\w)")
             for c, (_, pats) in LEXICON.items()}


def normalize_text(text: str) -> str:
    """NFKC, drop zero-width characters and soft hyphens, collapse whitespace runs to one space,
    casefold. Curly apostrophes become "'" so "you’re" matches "you're"."""
    if not isinstance(text, str):
        raise TypeError(f"text must be str, not {type(text).__name__}")
    t = unicodedata.normalize("NFKC", text).translate(_ZERO_WIDTH).replace("\u2019", "'").replace("\u2018", "'")
    return re.sub(r"\s+", " ", t).casefold()


def toxicity_categories(text: str) -> dict[str, int]:
    """Non-overlapping lexicon hits per category (every category present, 0 when none)."""
    t = normalize_text(text)
    return {c: len(rx.findall(t)) for c, rx in _COMPILED.items()}


def toxicity_score(text: str) -> float:
    """Toxicity in [0, 1]: 1 - prod over hits of (1 - severity(category)), a noisy-OR.

    0 exactly when no lexicon entry matches; one insult gives 0.6, one threat 0.9, two insults
    0.84. Independent of text length (a long benign text with one threat is still a threat)."""
    counts = toxicity_categories(text)
    keep = 1.0
    for c, k in counts.items():
        keep *= (1.0 - LEXICON[c][0]) ** k
    return min(1.0, max(0.0, 1.0 - keep))


def text_length(text: str, unit: str = "words", tokenizer=None) -> int:
    """Length of text in unit: "words" (whitespace-separated), "chars" (Unicode code points after
    NFKC) or "tokens" (tokenizer.encode(text, add_special_tokens=False); needs the tokenizer)."""
    if unit == "words":
        return len(text.split())
    if unit == "chars":
        return len(unicodedata.normalize("NFKC", text))
    if unit == "tokens":
        if tokenizer is None:
            raise ValueError("length unit 'tokens' needs a tokenizer (pass tokenizer=...)")
        return len(tokenizer.encode(text, add_special_tokens=False))
    raise ValueError(f"unknown length unit {unit!r}: words, chars or tokens")


def length_penalty(text: str, target: tuple[int, int] = (1, 128), unit: str = "words", tokenizer=None) -> float:
    """Length penalty in [-1, 0]. With L = text_length(text, unit) and target band (lo, hi):

        0                         if lo <= L <= hi
        -(lo - L) / lo            if L < lo   (-1 for empty text when lo >= 1)
        -min(1, (L - hi) / hi)    if L > hi   (-1 from twice the band's top upwards)
    """
    lo, hi = target
    if not (0 <= lo <= hi and hi > 0):
        raise ValueError(f"length target must satisfy 0 <= lo <= hi, hi > 0; got {target}")
    n = text_length(text, unit, tokenizer)
    if n < lo:
        return -(lo - n) / lo
    if n > hi:
        return -min(1.0, (n - hi) / hi)
    return 0.0


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", normalize_text(text))


def repetition_penalty(text: str, n: int = 3) -> float:
    """Repetition penalty in [-1, 0]: -(1 - unique / total) over the word n-grams of the text.

    Words are ``\\w+`` runs of the normalised (casefolded) text, so punctuation and case do not
    hide a repeat. A text with fewer than n words has no n-grams and scores 0. "a b c a b c"
    with n=3 has 4 trigrams, 3 unique: -0.25. The value is above -1 for any finite text (the
    first occurrence never counts as a repeat) and tends to -1 for endless loops."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    w = _words(text)
    grams = [tuple(w[i:i + n]) for i in range(len(w) - n + 1)]
    if not grams:
        return 0.0
    repeated = 1.0 - len(set(grams)) / len(grams)
    return -repeated if repeated else 0.0


DEFAULT_WEIGHTS = {"toxicity": 1.0, "length": 1.0, "repetition": 1.0}


def heuristic_reward(text: str, weights: dict[str, float] | None = None, *, length_target: tuple[int, int] = (1, 128),
                     length_unit: str = "words", tokenizer=None, ngram: int = 3) -> dict[str, float]:
    """All heuristic components and their combination.

    heuristic = clip(1 - 2 * w_tox * toxicity + w_len * length_penalty + w_rep * repetition_penalty, -1, 1)

    in [-1, 1]: 1 for a clean, well-sized, non-repeating text; -1 for a clearly toxic one (with the
    default weights of 1). weights may set any of "toxicity", "length", "repetition" (others are
    refused). -> {"toxicity", "length_penalty", "repetition_penalty", "heuristic"}."""
    w = dict(DEFAULT_WEIGHTS)
    if weights:
        unknown = set(weights) - set(DEFAULT_WEIGHTS)
        if unknown:
            raise ValueError(f"unknown heuristic weight(s) {sorted(unknown)}; allowed: {sorted(DEFAULT_WEIGHTS)}")
        w.update(weights)
    for k, v in w.items():
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"heuristic weight {k!r} must be finite and >= 0, got {v}")
    tox = toxicity_score(text)
    lp = length_penalty(text, length_target, length_unit, tokenizer)
    rp = repetition_penalty(text, ngram)
    h = 1.0 - 2.0 * w["toxicity"] * tox + w["length"] * lp + w["repetition"] * rp
    return {"toxicity": tox, "length_penalty": lp, "repetition_penalty": rp, "heuristic": min(1.0, max(-1.0, h))}
