"""Does a caption agree with its record?

Three checks, each reported as a human-readable issue string:
- numbers: every number stated with a unit (bpm, ms, mV, degrees, years) must match a
  measurement or the age within a tolerance; a number next to "PR", "QRS", "QT",
  "QTc" or "RR" must match that measurement specifically;
- diagnoses: every diagnosis the text asserts (found with a lexicon from
  scp_statements.csv descriptions, knowledge-base titles and common synonyms; negated
  mentions such as "no signs of infarction" do not count) must be one of the record's
  statements; a few descriptive findings are also accepted when the measurement shows them;
- contradictions (``record_contradictions``): a finding the caption asserts in words ("wide QRS",
  "tachycardia") or a diagnosis whose knowledge-base entry the record excludes (its ``contradicted_if``
  conditions), unless a listed statement names it; this covers background an LLM copies from passages;
- claims no record supports: "healthy"/"normal" claims on a record with abnormal statements,
  denials of a listed statement ("MI ruled out" on an MI record), treatment or management
  advice, and links (URLs); a number stated for a value flagged low confidence;
- completeness (``require_complete``): every statement is mentioned, the heart rate is
  stated when it was measured, and the text is not empty.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from esi.constants import PTBXL_AGE_OVER_89
from esi.cqa.facts import record_facts
from esi.cqa.measurements import reliable_value
from esi.cqa.prompts import SCP_ECG, CaptionInputs, Statement, is_number
from esi.data.record_text import without_invisible
from esi.knowledge import KnowledgeEntry
from esi.knowledge.conditions import Condition, first_holding, parse_condition

# Allowed difference between a stated number and the record's value, per unit.
TOLERANCES = {"bpm": 2.0, "ms": 10.0, "mV": 0.1, "degrees": 10.0, "years": 1.0}

_UNIT_ALIASES = {
    "bpm": "bpm", "beats per minute": "bpm", "beats/min": "bpm", "/min": "bpm",
    "ms": "ms", "msec": "ms", "millisecond": "ms", "milliseconds": "ms",
    "mv": "mV", "millivolt": "mV", "millivolts": "mV",
    "°": "degrees", "degree": "degrees", "degrees": "degrees", "deg": "degrees",
    "years": "years", "year": "years", "yrs": "years", "year-old": "years", "years-old": "years",
}  # fmt: skip
_NUMBER_RE = re.compile(
    r"(?<![\w.])([+\-\u2212]?\d+(?:\.\d+)?)[\s-]*("
    + "|".join(sorted((re.escape(u) for u in _UNIT_ALIASES), key=len, reverse=True))
    + r")(?![a-z])",
    re.IGNORECASE,
)
# Keyword nearest before a millisecond value names the interval it is about.
_INTERVAL_KEY_RE = re.compile(r"\b(qtc|qt\s*c|corrected\s+qt|qt|pr|qrs|rr)\b", re.IGNORECASE)
_INTERVAL_FIELDS = {
    "pr": ("pr_interval_ms",),
    "qrs": ("qrs_duration_ms",),
    "qt": ("qt_interval_ms",),
    "qtc": ("qtc_bazett_ms", "qtc_fridericia_ms"),
    "rr": ("rr_std_ms",),
}
_ALL_MS_FIELDS = tuple(name for names in _INTERVAL_FIELDS.values() for name in names)
_CLAUSE_BREAK_RE = re.compile(r"[.;:!?\n]|\bbut\b|\bwhereas\b|\bhowever\b")

# Fluent English name of each PTB-XL statement: used by the template writer and always
# a lexicon phrase for that code, so a template caption mentions each statement by construction.
STATEMENT_NAMES = {
    "NDT": "non-diagnostic T-wave abnormalities", "NST_": "non-specific ST changes", "DIG": "digitalis effect",
    "LNGQT": "a long QT interval", "NORM": "a normal ECG", "IMI": "inferior myocardial infarction",
    "ASMI": "anteroseptal myocardial infarction", "LVH": "left ventricular hypertrophy",
    "LAFB": "left anterior fascicular block", "ISC_": "non-specific ischemic changes",
    "IRBBB": "incomplete right bundle branch block", "1AVB": "first-degree AV block",
    "IVCD": "a non-specific intraventricular conduction disturbance",
    "ISCAL": "ischemic changes in the anterolateral leads",
    "CRBBB": "complete right bundle branch block", "CLBBB": "complete left bundle branch block",
    "ILMI": "inferolateral myocardial infarction", "LAO/LAE": "left atrial overload or enlargement",
    "AMI": "anterior myocardial infarction", "ALMI": "anterolateral myocardial infarction",
    "ISCIN": "ischemic changes in the inferior leads", "INJAS": "subendocardial injury in the anteroseptal leads",
    "LMI": "lateral myocardial infarction", "ISCIL": "ischemic changes in the inferolateral leads",
    "LPFB": "left posterior fascicular block", "ISCAS": "ischemic changes in the anteroseptal leads",
    "INJAL": "subendocardial injury in the anterolateral leads", "ISCLA": "ischemic changes in the lateral leads",
    "RVH": "right ventricular hypertrophy", "ANEUR": "ST-T changes compatible with a ventricular aneurysm",
    "RAO/RAE": "right atrial overload or enlargement", "EL": "an electrolyte disturbance or drug effect",
    "WPW": "Wolff-Parkinson-White pattern", "ILBBB": "incomplete left bundle branch block",
    "IPLMI": "inferoposterolateral myocardial infarction", "ISCAN": "ischemic changes in the anterior leads",
    "IPMI": "inferoposterior myocardial infarction", "SEHYP": "septal hypertrophy",
    "INJIN": "subendocardial injury in the inferior leads", "INJLA": "subendocardial injury in the lateral leads",
    "PMI": "posterior myocardial infarction", "3AVB": "third-degree AV block",
    "INJIL": "subendocardial injury in the inferolateral leads", "2AVB": "second-degree AV block",
    "ABQRS": "abnormal QRS complexes", "PVC": "ventricular premature complexes",
    "STD_": "non-specific ST depression", "VCLVH": "voltage criteria for left ventricular hypertrophy",
    "QWAVE": "Q waves", "LOWT": "low-amplitude T waves", "NT_": "non-specific T-wave changes",
    "PAC": "atrial premature complexes", "LPR": "a prolonged PR interval", "INVT": "inverted T waves",
    "LVOLT": "low QRS voltages", "HVOLT": "high QRS voltage", "TAB_": "T-wave abnormalities",
    "STE_": "non-specific ST elevation", "PRC(S)": "premature complexes", "SR": "sinus rhythm",
    "AFIB": "atrial fibrillation", "STACH": "sinus tachycardia", "SARRH": "sinus arrhythmia",
    "SBRAD": "sinus bradycardia", "PACE": "a normally functioning artificial pacemaker",
    "SVARR": "supraventricular arrhythmia", "BIGU": "a bigeminal pattern", "AFLT": "atrial flutter",
    "SVTAC": "supraventricular tachycardia", "PSVT": "paroxysmal supraventricular tachycardia",
    "TRIGU": "a trigeminal pattern",
}  # fmt: skip

_MI = ("IMI", "ASMI", "ILMI", "AMI", "ALMI", "LMI", "IPLMI", "IPMI", "PMI", "INJAS", "INJAL", "INJIN", "INJLA", "INJIL")
_ISC = ("ISC_", "ISCAL", "ISCIN", "ISCIL", "ISCAS", "ISCLA", "ISCAN")
_PREMATURE = ("PVC", "PAC", "PRC(S)", "BIGU", "TRIGU")
# Common names a writer may use; the empty tuple marks diagnoses no PTB-XL statement supports.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "myocardial infarction": _MI, "infarction": _MI, "infarct": _MI, "heart attack": _MI, "mi": _MI,
    "stemi": _MI, "nstemi": _MI, "myocardial injury": _MI, "subendocardial injury": _MI[9:],
    "myocardial ischemia": _ISC, "ischemia": _ISC, "ischemic changes": _ISC,
    "left ventricular hypertrophy": ("LVH", "VCLVH"), "lvh": ("LVH", "VCLVH"),
    "right ventricular hypertrophy": ("RVH",), "rvh": ("RVH",),
    "ventricular hypertrophy": ("LVH", "VCLVH", "RVH", "SEHYP"), "hypertrophy": ("LVH", "VCLVH", "RVH", "SEHYP"),
    "left atrial enlargement": ("LAO/LAE",), "left atrial overload": ("LAO/LAE",),
    "left atrial abnormality": ("LAO/LAE",), "p mitrale": ("LAO/LAE",),
    "right atrial enlargement": ("RAO/RAE",), "right atrial overload": ("RAO/RAE",), "p pulmonale": ("RAO/RAE",),
    "atrial enlargement": ("LAO/LAE", "RAO/RAE"),
    "bundle branch block": ("CLBBB", "ILBBB", "CRBBB", "IRBBB"),
    "left bundle branch block": ("CLBBB", "ILBBB"), "lbbb": ("CLBBB", "ILBBB"),
    "right bundle branch block": ("CRBBB", "IRBBB"), "rbbb": ("CRBBB", "IRBBB"),
    "fascicular block": ("LAFB", "LPFB"), "hemiblock": ("LAFB", "LPFB"),
    "left anterior hemiblock": ("LAFB",), "lafb": ("LAFB",), "left posterior hemiblock": ("LPFB",), "lpfb": ("LPFB",),
    "av block": ("1AVB", "2AVB", "3AVB"), "atrioventricular block": ("1AVB", "2AVB", "3AVB"),
    "heart block": ("1AVB", "2AVB", "3AVB"), "first degree av block": ("1AVB",),
    "first degree atrioventricular block": ("1AVB",), "first degree heart block": ("1AVB",),
    "second degree av block": ("2AVB",), "mobitz": ("2AVB",), "wenckebach": ("2AVB",),
    "third degree av block": ("3AVB",), "complete heart block": ("3AVB",),
    "intraventricular conduction delay": ("IVCD",), "intraventricular conduction disturbance": ("IVCD",),
    "atrial fibrillation": ("AFIB",), "afib": ("AFIB",), "af": ("AFIB",), "atrial flutter": ("AFLT",),
    "tachycardia": ("STACH", "SVTAC", "PSVT"), "bradycardia": ("SBRAD",),
    "sinus rhythm": ("SR", "STACH", "SBRAD", "SARRH"), "normal sinus rhythm": ("SR",),
    "supraventricular tachycardia": ("SVTAC", "PSVT"), "svt": ("SVTAC", "PSVT"),
    "premature ventricular complex": ("PVC", "PRC(S)"), "premature ventricular contraction": ("PVC", "PRC(S)"),
    "premature ventricular beat": ("PVC", "PRC(S)"), "pvc": ("PVC", "PRC(S)"), "pvcs": ("PVC", "PRC(S)"),
    "ventricular extrasystole": ("PVC", "PRC(S)"), "ventricular extrasystoles": ("PVC", "PRC(S)"),
    "premature atrial complex": ("PAC", "PRC(S)"), "premature atrial contraction": ("PAC", "PRC(S)"),
    "pac": ("PAC", "PRC(S)"), "pacs": ("PAC", "PRC(S)"), "atrial extrasystole": ("PAC", "PRC(S)"),
    "atrial extrasystoles": ("PAC", "PRC(S)"), "premature beats": _PREMATURE, "premature complex": _PREMATURE,
    "extrasystole": _PREMATURE, "extrasystoles": _PREMATURE, "ectopic beats": _PREMATURE,
    "bigeminy": ("BIGU",), "trigeminy": ("TRIGU",), "pacemaker": ("PACE",), "paced rhythm": ("PACE",),
    "wolff parkinson white": ("WPW",), "wolf parkinson white": ("WPW",), "wpw": ("WPW",),
    "pre excitation": ("WPW",), "preexcitation": ("WPW",), "digitalis": ("DIG",),
    "long qt": ("LNGQT",), "prolonged qt": ("LNGQT",), "qt prolongation": ("LNGQT",), "long qt syndrome": ("LNGQT",),
    "normal ecg": ("NORM",), "normal electrocardiogram": ("NORM",), "normal tracing": ("NORM",),
    "within normal limits": ("NORM",), "ventricular aneurysm": ("ANEUR",),
    "pathological q waves": ("QWAVE", *_MI), "electrolyte disturbance": ("EL",), "hyperkalemia": ("EL",),
    "hypokalemia": ("EL",), "hypercalcemia": ("EL",), "hypocalcemia": ("EL",),
    "low voltage": ("LVOLT",), "low qrs voltage": ("LVOLT",), "prolonged pr": ("LPR", "1AVB"),
    "ventricular fibrillation": (), "ventricular tachycardia": (), "torsades de pointes": (), "pericarditis": (),
    "myocarditis": (), "pulmonary embolism": (), "brugada": (), "cardiomyopathy": (), "heart failure": (),
    "takotsubo": (), "asystole": (), "sick sinus syndrome": (), "dextrocardia": (), "hypertension": (),
}  # fmt: skip

_NEGATION_BEFORE_RE = re.compile(
    r"\b(no|not|without|absence of|absent|negative for|free of|neither|nor|exclude[sd]?|ruled out|rules out|"
    r"lacks?|lacking|none)\b"
)
_NEGATION_AFTER_RE = re.compile(r"^\W*(?:\w+\W+){0,2}?(is|are|was|were)?\s*(absent|not|excluded|ruled out)\b")
# A finding written as a label with its value: "Infarction: absent.", "MI - negative".
_NEGATION_LABEL_RE = re.compile(r"^\s*[:=\-]\s*(absent|no|none|negative|not (present|seen|found)|excluded|ruled out)\b")
_NEGATION_WINDOW_WORDS = 8
# Phrases that contain a negation word but affirm: "there is no doubt that atrial fibrillation is present".
_PSEUDO_NEGATION_RE = re.compile(
    r"\b(no doubt|without (a )?doubt|beyond (any )?doubt|no question|not only|no uncertainty|not unlikely)\b"
)
# Claims that the patient or the whole ECG is normal: wrong on a record with any abnormal statement.
# ("normal ECG" itself is PTB-XL's NORM statement; the lexicon checks it is listed.)
_NORMALITY_RE = re.compile(
    r"\b(healthy|in good health|normal heart|no abnormalit\w*|unremarkable|nothing abnormal|"
    r"no (signs? of )?(cardiac |heart )?(disease|pathology|problems?)|"
    r"(entirely|completely|perfectly|totally|absolutely|fully|all) normal|"
    r"(excellent|good|great|perfect|fine) (condition|health|shape)|fit and well|nothing to worry( about)?|"
    r"no (cause|reason) for (concern|worry))\b",
    re.IGNORECASE,
)
BENIGN_CODES = {"NORM", "SR"}  # statements a normality claim may stand beside
# Care advice (treatment, drugs, tests, referral): captions describe an ECG, never advise.
ADVICE_RE = re.compile(
    r"\b(treat|therap|manag|should|recommend|advis|refer|anticoag|medication|prescri|evaluat|"
    r"follow.up|advice|consult|deserve|urgent|emergenc|must (see|seek|take|start)|take\b|go to\b|hospital|"
    r"see a (doctor|physician|cardiologist)|aspirin|amiodarone|warfarin|heparin|nitroglycerin|beta.?blocker|"
    r"clopidogrel|apixaban|rivaroxaban|metoprolol|call (an ambulance|911|112))",
    re.IGNORECASE,
)
_URL_RE = re.compile(
    r"(https?://|\bwww\.|\b[\w-]+\.(com|org|net|io|gov|edu|de|info|ly|gl|co|me|to|gd|cc|link|xyz|app|ru|cn)\b|"
    r"\b[a-z0-9-]+\.[a-z]{2,}/\S|\]\(|<a\s)",
    re.IGNORECASE,
)
_DOUBLE_NEGATION_RE = re.compile(r"\b(cannot|can ?not|can't|could not) (be )?(exclude|excluded|ruled out|rule out)\b")


def normalize(text: str) -> str:
    """Lowercase, US spelling, punctuation inside terms as spaces: the form the lexicon matches."""
    text = text.lower().replace("\u2212", "-")
    text = re.sub(r"isch(a)?em", "ischem", text)
    text = re.sub(r"\b1st\b", "first", re.sub(r"\b2nd\b", "second", re.sub(r"\b3rd\b", "third", text)))
    text = re.sub(r"(?<=\w)[-/'](?=\w)", " ", text)
    text = re.sub(r"[()\[\],]", lambda m: " , " if m.group() == "," else " ", text)
    return re.sub(r"[ \t]+", " ", text)


@dataclass(frozen=True)
class Mention:
    phrase: str
    codes: tuple[str, ...]
    negated: bool


class DiagnosisLexicon:
    """Phrase -> statement codes that support it; matched longest phrase first on word boundaries."""

    def __init__(self, phrases: Mapping[str, Iterable[str]]) -> None:
        self.phrases: dict[str, tuple[str, ...]] = {}
        for phrase, codes in phrases.items():
            key = normalize(phrase).strip()
            if key:
                self.phrases[key] = tuple(dict.fromkeys((*self.phrases.get(key, ()), *codes)))
        alternation = "|".join(re.escape(p) for p in sorted(self.phrases, key=len, reverse=True))
        self._pattern = re.compile(rf"\b({alternation})s?\b")

    @classmethod
    def build(cls, descriptions: Mapping[str, str], knowledge_entries: Sequence = ()) -> DiagnosisLexicon:
        """From scp_statements.csv descriptions (code -> text), KB titles and the synonym table."""
        phrases: dict[str, list[str]] = {}
        for code, description in descriptions.items():
            phrases.setdefault(description, []).append(code)
        for code, name in STATEMENT_NAMES.items():
            phrases.setdefault(re.sub(r"^(a|an) ", "", name), []).append(code)
        for entry in knowledge_entries:
            if entry.scp_codes:
                title = re.sub(r"\s*\([^)]*\)", "", entry.title)  # "Atrial fibrillation (AFIB)"
                phrases.setdefault(title, []).extend(entry.scp_codes)
        for phrase, codes in SYNONYMS.items():
            phrases.setdefault(phrase, []).extend(codes)
        return cls(phrases)

    def mentions(self, text: str) -> list[Mention]:
        norm = normalize(text)
        found = []
        for match in self._pattern.finditer(norm):
            before = _CLAUSE_BREAK_RE.split(norm[: match.start()])[-1]
            window = _PSEUDO_NEGATION_RE.sub(" ", " ".join(before.split()[-_NEGATION_WINDOW_WORDS:]))
            after = _CLAUSE_BREAK_RE.split(norm[match.end() :])[0]
            negated = bool(
                _NEGATION_BEFORE_RE.search(window)
                or _NEGATION_AFTER_RE.search(after)
                or _NEGATION_LABEL_RE.match(norm[match.end() :])
            )
            if negated and _DOUBLE_NEGATION_RE.search(window + " " + after):
                negated = False
            phrase = match.group(1)
            found.append(Mention(phrase, self.phrases[phrase], negated))
        return found


def _label(s: Statement) -> str:
    return s.code or s.description


def _quoted(description: str) -> re.Pattern | None:
    """A statement's own words as a whole phrase, in any case and with any punctuation between them."""
    words = re.findall(r"\w+", description)
    if not words:
        return None
    # Not after "complete"/"incomplete": that qualifier is the writer's claim, not the statement's words
    # ("right bundle branch block" quoted as "complete right bundle branch block" asserts more than the record).
    return re.compile(
        r"(?<!\w)(?<!complete\s)(?<!complete-)" + r"\W+".join(map(re.escape, words)) + r"(?!\w)", re.IGNORECASE
    )


def without_quoted_statements(text: str, statements: Sequence[Statement]) -> str:
    """`text` with every copy of a non-SCP statement's own words replaced by a neutral word (longest first,
    so a statement inside another goes with it)."""
    for description in sorted({s.description for s in statements if s.system != SCP_ECG}, key=len, reverse=True):
        pattern = _quoted(description)
        if pattern is not None:
            text = pattern.sub("statement", text)
    return text


def stated_numbers(text: str) -> list[tuple[float, str, int]]:
    """(value, canonical unit, position) of every number written with a unit."""
    out = []
    for match in _NUMBER_RE.finditer(text):
        value = float(match.group(1).replace("\u2212", "-"))
        out.append((value, _UNIT_ALIASES[match.group(2).lower()], match.start()))
    return out


def _close(stated: float, actual: float, unit: str, tol: float) -> bool:
    if unit == "mV":  # ST deviations are signed, but "depression of 0.12 mV" states the magnitude
        return abs(abs(stated) - abs(actual)) <= tol
    return abs(stated - actual) <= tol


def _measurement_supported_codes(m) -> set[str]:
    """Descriptive findings a caption may name because the measurement shows them."""
    codes = set()
    if getattr(m, "low_voltage", None):
        codes.add("LVOLT")
    qtcs = [reliable_value(m, n) for n in ("qtc_bazett_ms", "qtc_fridericia_ms")]
    if any(is_number(q) and q >= 460 for q in qtcs):
        codes.add("LNGQT")
    pr = reliable_value(m, "pr_interval_ms")
    if is_number(pr) and pr > 200:
        codes.add("LPR")
    return codes


def normality_claim(text: str) -> str | None:
    """The first claim that the patient or the whole ECG is normal which no negation takes back, else None."""
    for match in _NORMALITY_RE.finditer(text):
        before = _CLAUSE_BREAK_RE.split(normalize(text[: match.start()]))[-1]
        window = _PSEUDO_NEGATION_RE.sub(" ", " ".join(before.split()[-_NEGATION_WINDOW_WORDS:]))
        if not _NEGATION_BEFORE_RE.search(window):
            return match.group(0)
    return None


# ---- Hostile text: what no caption and no quoted record statement may carry, whatever the record says ----------

# Latin look-alikes (Cyrillic, Greek) that NFKC keeps: folded before matching, so "hеalthy" reads as "healthy".
_CONFUSABLES = str.maketrans(
    "\u0430\u0435\u043e\u0440\u0441\u0443\u0445\u0456\u0458\u0455\u0501\u051b\u051d\u04bb\u0410\u0412\u0415"
    "\u041a\u041c\u041d\u041e\u0420\u0421\u0422\u0425\u03bf\u03b1\u03b5\u03b9\u03ba\u03bd\u03c1\u03c4\u03c5"
    "\u0391\u0392\u0395\u0397\u0399\u039a\u039c\u039d\u039f\u03a1\u03a4\u03a7",
    "aeopcyxijsdqwhABEKMHOPCTXoaeiknptuABEHIKMNOPTX",
)
_INSTRUCTION_RE = re.compile(
    r"\b((ignore|disregard|forget|override)\s+(all\s+|any\s+|the\s+)?(previous|prior|above|earlier|preceding|"
    r"your)?\s*(instructions?|rules|prompts?|directions)|system prompt|you are now|new instructions?|"
    r"as an ai\b)",
    re.IGNORECASE,
)
_EMAIL_RE = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")
# Reassurance in other languages: captions are English, and a record's own text must not slip a verdict past the
# English checks (German "gesund"/"unauffällig", Spanish/Italian "sano", French "sain"/"en bonne santé", ...).
_FOREIGN_REASSURANCE_RE = re.compile(
    r"\b(gesund\w*|unauff[aä]llig\w*|normalbefund|kein(e|en)? (befund|auff[aä]lligkeit\w*)|san[oa]s?|saludable|"
    r"sain(e|s)?|en bonne sant[eé]|in buona salute|normale|здоров\w*|正常|健康)(?!\w)",
    re.IGNORECASE,
)
_NUMBER_WORDS = (
    "zero|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen|sixteen|"
    "seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety|hundred|thousand"
)
_SPELLED_NUMBER_RE = re.compile(
    rf"\b(?:{_NUMBER_WORDS})(?:[\s-]+(?:and[\s-]+)?(?:{_NUMBER_WORDS}))*[\s-]+"
    r"(beats? per minute|bpm|milliseconds?|ms|millivolts?|mv|degrees?|years?)\b",
    re.IGNORECASE,
)


def readable_form(text: str) -> str:
    """`text` as a reader sees it: NFKC, without invisible (format, control) characters, Latin look-alikes folded."""
    return without_invisible(text).translate(_CONFUSABLES)


def hostile_text_issues(text: str) -> list[str]:
    """What a caption may never carry, whatever its record: text addressed to the writer, e-mail addresses,
    reassurance in another language, and numbers spelled out (the number checks read digits)."""
    checks = (
        (_INSTRUCTION_RE, "contains text addressed to the writer ('{}')"),
        (_EMAIL_RE, "contains an e-mail address"),
        (_FOREIGN_REASSURANCE_RE, "contains a verdict in another language ('{}'); captions are English"),
        (_SPELLED_NUMBER_RE, "states a number in words ('{}'); numbers are written as digits"),
    )
    text = readable_form(text)
    return [message.format(match.group(0)) for pattern, message in checks if (match := pattern.search(text))]


WITHHELD_STATEMENT = "[text withheld by the faithfulness check]"


def record_statement_issues(statement: Statement, statements: Sequence[Statement]) -> list[str]:
    """Why a record's own text (a statement that is not a known code's description) may not be quoted: the claims
    no caption may make (advice, links, e-mail, instructions, foreign verdicts, a normality claim beside another
    abnormal statement)."""
    text = readable_form(statement.description)
    issues = hostile_text_issues(text)
    if ADVICE_RE.search(text):
        issues.append("gives care advice")
    if _URL_RE.search(text):
        issues.append("contains a link or web address")
    others = [s for s in statements if s is not statement and s.scp not in BENIGN_CODES]
    if others and normality_claim(text):
        issues.append(f"claims '{normality_claim(text)}' beside abnormal statements")
    return issues


def withhold_unsafe_statements(statements: Sequence[Statement]) -> list[Statement]:
    """The record's statements with each unsafe free text or unnamed code (`record_statement_issues`) replaced by
    `WITHHELD_STATEMENT`: quoted text stays the record's words, never an instruction, link or verdict."""
    kept = []
    for s in statements:
        own_text = s.system != SCP_ECG and (s.free_text or s.unnamed)
        if own_text and record_statement_issues(s, statements):
            s = replace(s, code="", description=WITHHELD_STATEMENT, scp_code=None)
        kept.append(s)
    return kept


# Findings a caption may assert in words rather than by a statement's name: phrase -> (the statements that state
# it, the conditions under which the record excludes it). Read in the lexicon's normalised form.
_FAST = (("STACH", "SVTAC", "PSVT"), ("heart_rate_bpm <= 100",))
_SLOW = (("SBRAD",), ("heart_rate_bpm >= 60",))
_WIDE = (("CLBBB", "CRBBB", "IVCD", "WPW", "PACE", "PVC", "PRC(S)", "BIGU", "TRIGU"), ("qrs_duration_ms < 120",))
_LONG_PR = (("1AVB", "LPR", "2AVB"), ("pr_interval_ms <= 200",))
_LONG_QT = (("LNGQT",), ("qtc_bazett_ms < 440",))
_IRREGULAR = (
    ("AFIB", "AFLT", "SARRH", "SVARR", "PVC", "PAC", "PRC(S)", "BIGU", "TRIGU", "2AVB"),
    ("not rr_irregular",),
)
_LOW_VOLTAGE = (("LVOLT",), ("not low_voltage",))
_FINDING_PHRASES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "tachycardia": _FAST, "fast heart rate": _FAST, "bradycardia": _SLOW, "slow heart rate": _SLOW,
    "wide qrs": _WIDE, "broad qrs": _WIDE, "prolonged pr": _LONG_PR, "long pr": _LONG_PR,
    "prolonged qt": _LONG_QT, "long qt": _LONG_QT,
    "irregularly irregular": _IRREGULAR, "irregular rhythm": _IRREGULAR, "irregular rr": _IRREGULAR,
    "left axis deviation": (("LAFB",), ("qrs_axis_category is normal", "qrs_axis_category is right")),
    "right axis deviation": (("LPFB", "RVH"), ("qrs_axis_category is normal", "qrs_axis_category is left")),
    "low voltage": _LOW_VOLTAGE, "low qrs voltage": _LOW_VOLTAGE,
}  # fmt: skip
_FINDINGS = DiagnosisLexicon({phrase: (phrase,) for phrase in _FINDING_PHRASES})
_FINDING_EXCLUDED_IF = {
    phrase: tuple(parse_condition(c) for c in conditions) for phrase, (_, conditions) in _FINDING_PHRASES.items()
}


def entries_by_code(knowledge: Sequence[KnowledgeEntry]) -> dict[str, list[KnowledgeEntry]]:
    """SCP-ECG code -> the knowledge entries about it."""
    about: dict[str, list[KnowledgeEntry]] = {}
    for entry in knowledge:
        for code in entry.scp_codes:
            about.setdefault(code, []).append(entry)
    return about


def record_contradictions(
    text: str,
    inputs: CaptionInputs,
    lexicon: DiagnosisLexicon,
    about: Mapping[str, Sequence[KnowledgeEntry]] | None = None,
) -> list[str]:
    """Assertions of ``text`` that the record excludes (by a measurement or a statement), as issue strings.

    Two kinds: a finding in words (``_FINDING_PHRASES``: "wide QRS" with a measured QRS of 96 ms), and a
    diagnosis (``lexicon``) every code of which has a knowledge entry (``about``, from ``entries_by_code``)
    whose ``contradicted_if`` the record meets ("sinus tachycardia" at 71 bpm). Negated mentions and those a
    listed statement names do not count.
    """
    about = about or {}
    listed = {s.scp for s in inputs.statements if s.scp}
    facts = record_facts(listed, inputs.measurements)
    issues = []
    for mention in _FINDINGS.mentions(text):
        stated_by, _ = _FINDING_PHRASES[mention.phrase]
        excluded = (
            None
            if mention.negated or listed.intersection(stated_by)
            else first_holding(_FINDING_EXCLUDED_IF[mention.phrase], facts)
        )
        if excluded is not None:
            issues.append(f"asserts '{mention.phrase}', which the record excludes ({excluded.text})")
    for mention in lexicon.mentions(text):
        if mention.negated or not mention.codes or listed.intersection(mention.codes):
            continue
        excluded: list[Condition] = []
        for code in mention.codes:
            reasons = [c for entry in about.get(code, ()) if (c := entry.contradicted_by(facts)) is not None]
            if not reasons:
                break
            excluded.append(reasons[0])
        else:
            reasons_text = "; ".join(dict.fromkeys(c.text for c in excluded))
            issues.append(f"asserts '{mention.phrase}', which the record excludes ({reasons_text})")
    return list(dict.fromkeys(issues))


class FaithfulnessChecker:
    """``check(text, inputs)`` -> list of issues; an empty list means the caption is faithful."""

    def __init__(
        self,
        lexicon: DiagnosisLexicon,
        tolerances: Mapping[str, float] | None = None,
        knowledge: Sequence[KnowledgeEntry] = (),
    ) -> None:
        self.lexicon = lexicon
        self.tolerances = {**TOLERANCES, **(tolerances or {})}
        self.about = entries_by_code(knowledge)  # entries whose contradicted_if conditions the check applies

    def check(self, text: str, inputs: CaptionInputs, require_complete: bool = True) -> list[str]:
        text = readable_form(text)  # a zero-width space or a Cyrillic letter must not hide "healthy"
        # The record's own non-SCP statements (Challenge names, machine report lines) may be quoted as they
        # stand: their words are the record's, so the claim checks read the text without them.
        # (A denial is looked for in the whole text: "no atrial fibrillation" denies a quoted statement too.)
        own = without_quoted_statements(text, inputs.statements)
        mentions = self.lexicon.mentions(text)
        issues = self._number_issues(own, inputs)
        issues += self._diagnosis_issues(self.lexicon.mentions(own) if own != text else mentions, mentions, inputs)
        issues += record_contradictions(own, inputs, self.lexicon, self.about)
        issues += self._claim_issues(own, inputs)
        issues += hostile_text_issues(text)
        if require_complete:
            issues += self._completeness_issues(text, mentions, inputs)
        return issues

    def _number_issues(self, text: str, inputs: CaptionInputs) -> list[str]:
        issues = []
        for value, unit, pos in stated_numbers(text):
            candidates, what = self._candidates(text, pos, unit, inputs)
            tol = self.tolerances[unit]
            if not candidates:
                issues.append(f"states {value:g} {unit} for {what}, but the record has no such value")
            elif not any(_close(value, c, unit, tol) for c in candidates):
                shown = ", ".join(f"{c:.4g}" for c in candidates)
                issues.append(f"states {value:g} {unit} for {what}; record has {shown} {unit} (tolerance {tol:g})")
        return issues

    def _candidates(self, text: str, pos: int, unit: str, inputs: CaptionInputs) -> tuple[list[float], str]:
        m = inputs.measurements

        def values(names: Iterable[str]) -> list[float]:  # low-confidence values may not be stated
            return [float(v) for v in (reliable_value(m, n) for n in names) if is_number(v)]

        if unit == "bpm":
            return values(["heart_rate_bpm"]), "heart rate"
        if unit == "degrees":
            return values(["qrs_axis_deg"]), "QRS axis"
        if unit == "years":
            if not is_number(inputs.age):
                return [], "age"
            return ([89.0] if inputs.age >= PTBXL_AGE_OVER_89 else [float(inputs.age)]), "age"
        if unit == "mV":
            st = getattr(m, "st_deviation_mv", None) or {}
            st_values = [float(v) for v in st.values() if is_number(v)]
            return values(["sokolow_lyon_mv", "cornell_mv"]) + st_values, "a voltage"
        clause = _CLAUSE_BREAK_RE.split(text[:pos])[-1]
        keys = _INTERVAL_KEY_RE.findall(clause)
        if keys:
            key = re.sub(r"\s+", "", keys[-1].lower())
            key = "qtc" if key in ("qtc", "correctedqt") else key
            return values(_INTERVAL_FIELDS[key]), f"the {key.upper().replace('QTC', 'QTc')} interval"
        return values(_ALL_MS_FIELDS), "an interval"

    def _diagnosis_issues(self, own: list[Mention], mentions: list[Mention], inputs: CaptionInputs) -> list[str]:
        """Assertions in the writer's own words (`own`) must be listed; no mention (`mentions`) may deny one."""
        listed_codes = {s.scp for s in inputs.statements if s.scp}
        allowed = listed_codes | _measurement_supported_codes(inputs.measurements)
        listed = ", ".join(_label(s) for s in inputs.statements) or "none"
        issues = []
        for mention in own:
            if not mention.negated and not allowed.intersection(mention.codes):
                issues.append(f"asserts '{mention.phrase}', not among the record's statements ({listed})")
        for mention in mentions:
            if mention.negated and listed_codes.intersection(mention.codes):
                denied = sorted(listed_codes.intersection(mention.codes))
                issues.append(f"denies '{mention.phrase}', but the record's statements include {', '.join(denied)}")
        return list(dict.fromkeys(issues))

    def _claim_issues(self, text: str, inputs: CaptionInputs) -> list[str]:
        issues = []
        # A statement without a benign SCP-ECG meaning counts as abnormal: unsure means no normality claim.
        abnormal = sorted({_label(s) for s in inputs.statements if s.scp not in BENIGN_CODES})
        claim = normality_claim(text)
        if abnormal and claim:
            issues.append(f"claims '{claim}', but the record's statements include {', '.join(abnormal)}")
        if ADVICE_RE.search(text):
            issues.append(f"gives care advice ('{ADVICE_RE.search(text).group(0)}...'); captions only describe")
        if _URL_RE.search(text):
            issues.append("contains a link or web address")
        return issues

    def _completeness_issues(self, text: str, mentions: list[Mention], inputs: CaptionInputs) -> list[str]:
        if not text.strip():
            return ["caption is empty"]
        covered = {code for mention in mentions if not mention.negated for code in mention.codes}
        issues = []
        for s in inputs.statements:
            if s.scp in covered:
                continue
            quoted = None if s.system == SCP_ECG else _quoted(s.description)
            if quoted is None or not quoted.search(text):
                issues.append(f"does not mention the statement {_label(s)} ({s.description})")
        rate = reliable_value(inputs.measurements, "heart_rate_bpm")
        if is_number(rate) and not any(unit == "bpm" for _, unit, _ in stated_numbers(text)):
            issues.append("does not state the measured heart rate")
        return issues
