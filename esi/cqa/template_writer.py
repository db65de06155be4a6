"""Deterministic English captions from a record's inputs, without an LLM.

The writer states each measurement with the same rounding the prompt uses, names every
statement with a lexicon phrase for its own code, and adds one knowledge sentence per
statement only when that sentence passes the faithfulness check on its own and carries
no numbers. So its output passes ``FaithfulnessChecker.check`` by construction. Phrasing
varies between records but is fixed per ``ecg_id``.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence

from esi.cqa.faithfulness import STATEMENT_NAMES, FaithfulnessChecker, stated_numbers
from esi.cqa.prompts import (
    INTERVAL_FIELDS,
    VOLTAGE_FIELDS,
    CaptionInputs,
    Statement,
    format_age,
    format_value,
    is_number,
    missing_reason,
    significant_st_deviation,
)

RHYTHM_CODES = ("SR", "AFIB", "AFLT", "STACH", "SBRAD", "SARRH", "SVARR", "SVTAC", "PSVT", "BIGU", "TRIGU", "PACE")
_SENTENCE_SPLIT_RE = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_MAX_KNOWLEDGE_CHARS = 320
_LABEL_RE = re.compile(r"^[A-Z][A-Za-z -]{2,30}:\s+")
# Captions describe; knowledge sentences about care (management, tests, drugs) stay out of them.
_ADVICE_RE = re.compile(
    r"\b(treat|therap|manag|should|recommend|refer|anticoag|medication|drugs?\b|evaluat|follow.up|tests?\b|advice|"
    r"deserve|urgent|emergenc)",
    re.IGNORECASE,
)


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _join(items: Sequence[str]) -> str:
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


class TemplateWriter:
    """``write(inputs) -> str``; needs the checker to vet knowledge sentences and missing-value reasons."""

    def __init__(self, checker: FaithfulnessChecker) -> None:
        self.checker = checker

    def write(self, inputs: CaptionInputs) -> str:
        digest = hashlib.sha256(f"cqa-template:{inputs.ecg_id}".encode()).digest()
        rng = random.Random(int.from_bytes(digest[:8], "big"))
        m = inputs.measurements
        parts = [
            self._demographics(inputs, rng),
            self._rate(m, inputs, rng),
            self._intervals(m, inputs, rng),
            self._axis(m, inputs),
            self._voltages(m, inputs, rng),
            self._st(m, inputs, rng),
            self._statements(inputs, rng),
            "All values are automatic estimates from the digitised signal; this text is machine-generated "
            "for research and is not a diagnosis.",
        ]
        return " ".join(p for p in parts if p)

    def _safe(self, fragment: str, inputs: CaptionInputs) -> bool:
        """A fragment from outside the writer (reason text, knowledge) may be quoted if it adds no claims."""
        return not stated_numbers(fragment) and not self.checker.check(fragment, inputs, require_complete=False)

    def _reason(self, m, name: str, inputs: CaptionInputs) -> str:
        reason = missing_reason(m, name)
        return f" ({reason})" if self._safe(reason, inputs) else ""

    def _demographics(self, inputs: CaptionInputs, rng: random.Random) -> str:
        age = format_age(inputs.age)
        sex = inputs.sex if inputs.sex in ("male", "female") else ""
        who = f"{sex} patient" if sex else "patient"
        if age is None:  # missing demographics are simply left out (PTB-XL pretraining pool: all missing)
            return f"This 12-lead ECG was recorded from a {who}."
        if age == "over 89":
            return f"This 12-lead ECG was recorded from a {who} over 89 years of age."
        return rng.choice(
            [
                f"This 12-lead ECG was recorded from a {age}-year-old {who}.",
                f"The recording belongs to a {who} aged {age} years.",
                f"A resting 12-lead ECG of a {who}, {age} years old.",
            ]
        )

    def _rate(self, m, inputs: CaptionInputs, rng: random.Random) -> str:
        rate = m.heart_rate_bpm
        if not is_number(rate):
            text = f"The heart rate could not be measured{self._reason(m, 'heart_rate_bpm', inputs)}."
        else:
            text = rng.choice(["The heart rate is {}", "The ventricular rate measures {}", "Heart rate: {}"]).format(
                format_value(rate, "bpm")
            )
            if m.rr_irregular is not None:
                text += ", with " + ("irregular" if m.rr_irregular else "regular") + " RR intervals"
            if is_number(m.rr_std_ms):
                text += f" (RR standard deviation {format_value(m.rr_std_ms, 'ms')})"
            text += "."
        if m.p_wave_absent is not None:
            text += " " + ("No consistent P waves were detected." if m.p_wave_absent else "P waves are detected.")
        return text

    def _intervals(self, m, inputs: CaptionInputs, rng: random.Random) -> str:
        known, unknown = [], []
        for f in INTERVAL_FIELDS:
            value = getattr(m, f.name)
            if is_number(value):
                known.append(f"{f.label} {format_value(value, f.unit)}")
            else:
                unknown.append(f"the {f.label} could not be measured{self._reason(m, f.name, inputs)}")
        sentences = []
        if known:
            lead = rng.choice(["Intervals: {}.", "The measured intervals are {}.", "Measured intervals: {}."])
            sentences.append(lead.format(_join(known)))
        sentences += [_cap(u) + "." for u in unknown]
        return " ".join(sentences)

    def _axis(self, m, inputs: CaptionInputs) -> str:
        axis = m.qrs_axis_deg
        if not is_number(axis):
            return f"The QRS axis could not be determined{self._reason(m, 'qrs_axis_deg', inputs)}."
        where = {
            "normal": "within the normal range",
            "left": "deviated to the left",
            "right": "deviated to the right",
            "extreme": "in the extreme range",
        }.get(m.qrs_axis_category or "", "")
        value = format_value(axis, "degrees", signed=True)
        return f"The QRS axis is {value}, {where}." if where else f"The QRS axis is {value}."

    def _voltages(self, m, inputs: CaptionInputs, rng: random.Random) -> str:
        known = [
            f"{f.label} {format_value(getattr(m, f.name), f.unit, f.decimals)}"
            for f in VOLTAGE_FIELDS
            if is_number(getattr(m, f.name))
        ]
        lead = rng.choice(["QRS voltages: {}.", "The QRS amplitude indices are {}."])
        text = lead.format(_join(known)) if known else ""
        if m.low_voltage:
            text += " The QRS amplitudes meet the low QRS voltage criterion."
        return text.strip()

    def _st(self, m, inputs: CaptionInputs, rng: random.Random) -> str:
        if not m.st_deviation_mv:
            return f"ST deviation could not be measured{self._reason(m, 'st_deviation_mv', inputs)}."
        significant = significant_st_deviation(m)
        if not significant:
            return rng.choice(
                ["ST segments lie close to the baseline in all leads.", "No lead shows marked ST deviation."]
            )
        parts = []
        for kind, sign in (("elevation", 1), ("depression", -1)):
            leads = [f"{lead} ({format_value(abs(v), 'mV', 2)})" for lead, v in significant.items() if v * sign > 0]
            if leads:
                parts.append(f"ST {kind} in {_join(leads)}")
        return f"The ST segments show {_join(parts)}."

    def _statements(self, inputs: CaptionInputs, rng: random.Random) -> str:
        if not inputs.statements:
            return "No SCP-ECG statements accompany this record."
        ordered = sorted(inputs.statements, key=lambda s: s.code not in RHYTHM_CODES)
        listed = _join([self._name(s) for s in ordered])
        lead = rng.choice(
            [
                "The cardiologists' statements list {}.",
                "According to the SCP-ECG statements, the record shows {}.",
                "The statements for this record are {}.",
            ]
        )
        sentences = [lead.format(listed)]
        for statement in ordered:
            knowledge = self._knowledge(statement, inputs)
            if knowledge:
                sentences.append(knowledge)
        return " ".join(sentences)

    @staticmethod
    def _name(statement: Statement) -> str:
        name = STATEMENT_NAMES.get(statement.code, statement.description)
        if 0 < statement.likelihood < 100:
            name += f" (likelihood {statement.likelihood:.0f}%)"
        return name

    def _knowledge(self, statement: Statement, inputs: CaptionInputs) -> str:
        """First sentence of the statement's own knowledge entry that makes no extra claim."""
        for passage in inputs.passages:
            if passage.id != f"scp:{statement.code}":
                continue
            for sentence in _SENTENCE_SPLIT_RE.split(passage.text.strip()):
                sentence = _LABEL_RE.sub("", sentence).rstrip(" .") + "."  # "Significance: ..." -> "..."
                if len(sentence) > _MAX_KNOWLEDGE_CHARS or _ADVICE_RE.search(sentence):
                    continue
                if self._safe(sentence, inputs):
                    return self._frame(sentence, statement)
        return ""

    def _frame(self, sentence: str, statement: Statement) -> str:
        """Name the statement when the sentence does not, so the background reads as being about it."""
        name = re.sub(r"^(a|an) ", "", STATEMENT_NAMES.get(statement.code, statement.description))
        codes = {code for m in self.checker.lexicon.mentions(sentence) for code in m.codes}
        if statement.code in codes:
            return _cap(sentence)
        first = sentence[0].lower() if sentence[1:2].islower() else sentence[0]  # keep "ECG", "QRS"
        return f"Background on {name}: {first}{sentence[1:]}"
