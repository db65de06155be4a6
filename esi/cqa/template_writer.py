"""Deterministic English captions from a record's inputs, without an LLM.

The writer names every statement with a lexicon phrase for its own code, states each
measurement that is not flagged low confidence with the same rounding the prompt uses, and
adds one knowledge sentence per statement only when that sentence passes the faithfulness
check on its own and carries no numbers. So its output passes ``FaithfulnessChecker.check``
by construction. Sections come in the order a text tower that truncates should read them
(statements, measurements, knowledge), each within a MiniLM token budget. Phrasing varies
between records but is fixed per ``ecg_id``.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from esi.cqa.faithfulness import ADVICE_RE, STATEMENT_NAMES, FaithfulnessChecker, stated_numbers
from esi.cqa.measurements import reliable_value
from esi.cqa.options import TEXT_VARIANTS
from esi.cqa.prompts import (
    SCP_ECG,
    VOLTAGE_FIELDS,
    CaptionInputs,
    Statement,
    format_age,
    format_value,
    is_number,
    significant_st_deviation,
    statement_groups,
    system_noun,
    unnamed_phrase,
)
from esi.text_encoder import default_text_model_path

RHYTHM_CODES = ("SR", "AFIB", "AFLT", "STACH", "SBRAD", "SARRH", "SVARR", "SVTAC", "PSVT", "BIGU", "TRIGU", "PACE")
_SENTENCE_SPLIT_RE = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_MAX_KNOWLEDGE_CHARS = 320
# Background sentences about drugs or tests lead towards care; they stay out (the checker's advice
# rule cannot ban the words: "drug effect" is a PTB-XL statement).
_CARE_TOPIC_RE = re.compile(r"\b(drugs?|tests?)\b", re.IGNORECASE)
# Intervals in caption order with short labels (the prompt's INTERVAL_FIELDS carry the long ones);
# Fridericia's QTc is in the data, not the caption: one corrected QT is what a reader needs.
_CAPTION_INTERVALS = {
    "pr_interval_ms": "PR",
    "qrs_duration_ms": "QRS",
    "qt_interval_ms": "QT",
    "qtc_bazett_ms": "QTc (Bazett)",
}
_LABEL_RE = re.compile(r"^[A-Z][A-Za-z -]{2,30}:\s+")


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _join(items: Sequence[str]) -> str:
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


# Every caption's closing sentence: it is part of the published captions' text (and of their token budget), so it
# speaks of the caption's values; the package's own disclaimer is `esi.constants.DISCLAIMER`.
DISCLAIMER = "Automatic research estimates, not a diagnosis."


@dataclass(frozen=True)
class TokenBudget:
    """Most MiniLM tokens (no [CLS]/[SEP]) each caption section may use; whole sentences are dropped
    from the end of a section until it fits. ``total`` fits a text tower reading 128 tokens: the
    statements (always kept whole, with the heart rate: the completeness check needs both) come
    first, so a truncating model still reads what matters; knowledge gets what is left."""

    total: int = 126
    statements: int = 48
    measurements: int = 64
    knowledge: int = 32


@lru_cache(maxsize=1)
def _minilm_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(default_text_model_path())


def count_tokens(text: str) -> int:
    """MiniLM (all-MiniLM-L6-v2) word pieces in ``text``, without special tokens."""
    return len(_minilm_tokenizer()(text, add_special_tokens=False)["input_ids"])


class TemplateWriter:
    """``write(inputs) -> str``; needs the checker to vet knowledge sentences.

    The caption is ordered statements, measurements (demographics among them), retrieved knowledge,
    each section within its ``TokenBudget``. ``text_variant`` selects the sections for ablations:
    ``full``, ``no_knowledge``, ``statements_only``, ``measurements_only``; only the first two are
    complete captions in the faithfulness check's sense (``complete``).
    """

    def __init__(
        self, checker: FaithfulnessChecker, text_variant: str = "full", budget: TokenBudget = TokenBudget()
    ) -> None:
        if text_variant not in TEXT_VARIANTS:
            raise ValueError(f"text_variant {text_variant!r} is not one of {', '.join(TEXT_VARIANTS)}")
        self.checker = checker
        self.text_variant = text_variant
        self.budget = budget

    @property
    def complete(self) -> bool:
        """Whether captions of this variant mention every statement and the heart rate."""
        return self.text_variant in ("full", "no_knowledge")

    def write(self, inputs: CaptionInputs) -> str:
        digest = hashlib.sha256(f"cqa-template:{inputs.ecg_id}".encode()).digest()
        rng = random.Random(int.from_bytes(digest[:8], "big"))
        m = inputs.measurements
        variant = self.text_variant
        left = self.budget.total - count_tokens(DISCLAIMER)
        sections: list[str] = []

        def add(sentences: list[str], budget: int, required: int = 0) -> None:
            """Append the first ``required`` sentences whatever they cost, then more while within budget."""
            nonlocal left
            used = 0
            for i, sentence in enumerate(s for s in sentences if s):
                cost = count_tokens(sentence)
                if i >= required and (used + cost > budget or cost > left):
                    continue  # a later, shorter sentence may still fit
                sections.append(sentence)
                used += cost
                left -= cost

        if variant != "measurements_only":
            add([self._statements(inputs, rng)], self.budget.statements, required=1)
        if variant != "statements_only":
            add(
                [
                    self._rate(m, inputs, rng),
                    self._intervals(m, inputs, rng),
                    self._demographics(inputs, rng),
                    self._axis(m, inputs),
                    self._st(m, inputs, rng),
                    self._voltages(m, inputs, rng),
                ],
                self.budget.measurements,
                required=1,
            )
        if variant == "full":
            add(list(dict.fromkeys(self._knowledge(s, inputs) for s in self._ordered(inputs))), self.budget.knowledge)
        return " ".join([*sections, DISCLAIMER])

    def _safe(self, fragment: str, inputs: CaptionInputs) -> bool:
        """A fragment from outside the writer (reason text, knowledge) may be quoted if it adds no claims."""
        return not stated_numbers(fragment) and not self.checker.check(fragment, inputs, require_complete=False)

    def _demographics(self, inputs: CaptionInputs, rng: random.Random) -> str:
        age = format_age(inputs.age)
        sex = inputs.sex if inputs.sex in ("male", "female") else ""
        who = f"{sex} patient" if sex else "patient"
        if age is None:  # missing demographics are simply left out (PTB-XL pretraining pool: all missing)
            return f"A {who}." if sex else ""
        if age == "over 89":
            return f"The {who} is over 89 years of age."
        return rng.choice([f"The {who} is {age} years old.", f"A {age}-year-old {who}."])

    def _rate(self, m, inputs: CaptionInputs, rng: random.Random) -> str:
        rate = reliable_value(m, "heart_rate_bpm")
        if not is_number(rate):
            text = "The heart rate could not be measured reliably."
        else:
            text = rng.choice(["The heart rate is {}", "Heart rate {}", "The ventricular rate is {}"]).format(
                format_value(rate, "bpm")
            )
            if m.rr_irregular is not None:
                text += ", " + ("irregular" if m.rr_irregular else "regular")
            text += "."
        if m.p_wave_absent is not None:
            text += " " + ("No consistent P waves." if m.p_wave_absent else "P waves present.")
        return text

    def _intervals(self, m, inputs: CaptionInputs, rng: random.Random) -> str:
        known, unsure = [], []
        for name, label in _CAPTION_INTERVALS.items():
            value = reliable_value(m, name)
            if is_number(value):
                known.append(f"{label} {format_value(value, 'ms')}")
            elif name != "qtc_bazett_ms" or "QT" not in unsure:  # one word for QT and its correction
                unsure.append(label)
        text = rng.choice(["{}.", "Intervals: {}."]).format(", ".join(known)) if known else ""
        if unsure:
            text += f" {_join(unsure)} could not be measured reliably."
        return text.strip()

    def _axis(self, m, inputs: CaptionInputs) -> str:
        axis = m.qrs_axis_deg
        if not is_number(axis):
            return "The QRS axis could not be determined."
        where = {
            "normal": "within the normal range",
            "left": "deviated to the left",
            "right": "deviated to the right",
            "extreme": "in the extreme range",
        }.get(m.qrs_axis_category or "", "")
        value = format_value(axis, "degrees", signed=True)
        return f"QRS axis {value}, {where}." if where else f"QRS axis {value}."

    def _voltages(self, m, inputs: CaptionInputs, rng: random.Random) -> str:
        known = [
            f"{f.label} {format_value(getattr(m, f.name), f.unit, f.decimals)}"
            for f in VOLTAGE_FIELDS
            if is_number(getattr(m, f.name))
        ]
        text = f"{_join(known)}." if known else ""
        if m.low_voltage:
            text += " Low QRS voltage criterion met."
        return text.strip()

    def _st(self, m, inputs: CaptionInputs, rng: random.Random) -> str:
        if not m.st_deviation_mv:
            return "ST deviation could not be measured."
        significant = significant_st_deviation(m)
        if not significant:
            return "No marked ST deviation."
        parts = []
        for kind, sign in (("elevation", 1), ("depression", -1)):
            leads = [f"{lead} ({format_value(abs(v), 'mV', 2)})" for lead, v in significant.items() if v * sign > 0]
            if leads:
                parts.append(f"ST {kind} in {_join(leads)}")
        return _cap(_join(parts)) + "."

    def _statements(self, inputs: CaptionInputs, rng: random.Random) -> str:
        """One sentence per coding system, naming it; free-text statements (machine report lines) are quoted."""
        groups = statement_groups(self._ordered(inputs))
        if not groups:
            return "No statements accompany this record."
        sentences = []
        for system, members in groups.items():
            if system == SCP_ECG:
                templates = [
                    "The cardiologists' statements list {}.",
                    "According to the SCP-ECG statements, the record shows {}.",
                    "The statements for this record are {}.",
                ]
            else:
                noun = system_noun(system)
                templates = [f"The {noun} list {{}}.", f"According to the {noun}, the record shows {{}}."]
            if all(s.free_text for s in members):
                verb = "reads" if system_noun(system).endswith("report") else "read"
                sentences.append(f'The {system_noun(system)} {verb}: "{"; ".join(s.description for s in members)}".')
            else:
                sentences.append(rng.choice(templates).format(_join([self._name(s) for s in members])))
        return " ".join(sentences)

    @staticmethod
    def _ordered(inputs: CaptionInputs) -> list[Statement]:
        """Statements with the rhythm first, as a cardiologist reads them."""
        return sorted(inputs.statements, key=lambda s: s.scp not in RHYTHM_CODES)

    @staticmethod
    def _name(statement: Statement) -> str:
        """SCP-ECG statements by their lexicon name; others by the source's own text (an unnamed code as its code)."""
        if statement.system != SCP_ECG:
            return unnamed_phrase(statement) if statement.unnamed else statement.description
        name = STATEMENT_NAMES.get(statement.code, statement.description)
        if 0 < statement.likelihood < 100:
            name += f" (likelihood {statement.likelihood:.0f}%)"
        return name

    def _knowledge(self, statement: Statement, inputs: CaptionInputs) -> str:
        """First sentence of the statement's own knowledge entry that makes no extra claim."""
        for passage in inputs.passages:
            if statement.scp is None or passage.id != f"scp:{statement.scp}":
                continue
            for sentence in _SENTENCE_SPLIT_RE.split(passage.text.strip()):
                sentence = _LABEL_RE.sub("", sentence).rstrip(" .") + "."  # "Significance: ..." -> "..."
                if (
                    len(sentence) > _MAX_KNOWLEDGE_CHARS
                    or ADVICE_RE.search(sentence)
                    or _CARE_TOPIC_RE.search(sentence)
                ):
                    continue
                if self._safe(sentence, inputs):
                    return self._frame(sentence, statement)
        return ""

    def _frame(self, sentence: str, statement: Statement) -> str:
        """Name the statement when the sentence does not, so the background reads as being about it."""
        name = statement.description
        if statement.system == SCP_ECG:
            name = re.sub(r"^(a|an) ", "", STATEMENT_NAMES.get(statement.code, statement.description))
        codes = {code for m in self.checker.lexicon.mentions(sentence) for code in m.codes}
        if statement.scp in codes:
            return _cap(sentence)
        first = sentence[0].lower() if sentence[1:2].islower() else sentence[0]  # keep "ECG", "QRS"
        return f"Background on {name}: {first}{sentence[1:]}"
