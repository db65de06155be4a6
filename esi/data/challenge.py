"""Read ECGs in the PhysioNet/CinC Challenge format (2020 and 2021 releases) as a prepared source.

The Challenge distributes CPSC 2018, CPSC-Extra, INCART, PTB, PTB-XL, Georgia, Chapman-Shaoxing and
Ningbo as one WFDB record per ECG: `.hea` + `.mat`, header comments `# Age:`, `# Sex:`, `# Dx:`.
`Dx` lists SNOMED-CT codes (2021) or abbreviations (2020, e.g. CPSC 2018's `RBBB`, `I-AVB`,
`Normal`). Codes are named with the Challenge's mapping tables (shipped as package data); a code
not in the tables is kept, visible as its code. Records keep their full length (6-60 s in CPSC 2018).

The record list is every `.hea` below the folder, sorted by relative name; `ecg_id` is the position
in that list (1-based) and `record_name` the relative name. The Challenge gives no patient ids
(`patient_id` = `ecg_id`) and no folds (`strat_fold` is a stable hash of the record name).

Research software, not a diagnostic device.
"""

from __future__ import annotations

import csv
import importlib.resources
import os
import re
from functools import cache, cached_property
from pathlib import Path

from datasets import Features

from esi.data.labels import parse_age, parse_sex, scp_reference, wfdb_example
from esi.data.schema import RecordError, hash_fold, prepared_features
from esi.data.wfdb_record import inside, read_wfdb

SOURCE = "Challenge record"
SNOMED_SYSTEM = "SNOMED-CT"
ABBREVIATION_SYSTEM = "CinC 2020 abbreviation"
MAPPING_TABLES = ("dx_mapping_scored.csv", "dx_mapping_unscored.csv")
DEFAULT_MAPPING_DIR = Path(str(importlib.resources.files("esi.data") / "resources" / "cinc2021"))
# 2020-release spellings that differ from the 2021 tables' abbreviations.
ABBREVIATION_ALIASES = {"I-AVB": "IAVB"}
# CPSC 2018's "Normal" class (normal ECG) is not a SNOMED diagnosis in the tables.
EXTRA_ABBREVIATIONS = {"Normal": "normal ECG"}
# Challenge SNOMED-CT code -> the SCP-ECG statement of the same meaning (PTB-XL's codes), used for
# the PTB-XL task labels and the CQA's statement descriptions. The Challenge scores RBBB/CRBBB and
# PAC/SVPB, PVC/VPB as equivalent, and so does this table.
SNOMED_TO_SCP = {
    "164889003": "AFIB",
    "164890007": "AFLT",
    "733534002": "CLBBB",
    "164909002": "CLBBB",
    "713427006": "CRBBB",
    "59118001": "CRBBB",
    "713426002": "IRBBB",
    "251120003": "ILBBB",
    "270492004": "1AVB",
    "195042002": "2AVB",
    "27885002": "3AVB",
    "445118002": "LAFB",
    "445211001": "LPFB",
    "251146004": "LVOLT",
    "698252002": "IVCD",
    "426783006": "SR",
    "284470004": "PAC",
    "63593006": "PAC",
    "427172004": "PVC",
    "17338001": "PVC",
    "10370003": "PACE",
    "164947007": "LPR",
    "111975006": "LNGQT",
    "164917005": "QWAVE",
    "427393009": "SARRH",
    "426177001": "SBRAD",
    "427084000": "STACH",
    "164934002": "TAB_",
    "59931005": "INVT",
    "429622005": "STD_",
    "164931005": "STE_",
    "164873001": "LVH",
    "89792004": "RVH",
    "67741000119109": "LAO/LAE",
    "74390002": "WPW",
    "67198005": "PSVT",
    "426761007": "SVTAC",
    "251268003": "PACE",
    "251266004": "PACE",
}
EXTRA_TO_SCP = {"Normal": "NORM"}
# "right/left bundle branch block" without "complete" or "incomplete": the Challenge scores them as the complete
# block, so they keep that SCP statement as a task label, but SCP-ECG has no statement of their meaning, so the CQA
# gives them none (the record states a bundle branch block, not that it is complete).
UNSPECIFIED_COMPLETENESS = frozenset({"59118001", "164909002"})
# What a Dx code looks like: a SNOMED-CT number or an abbreviation (`IAVB`, `I-AVB`, `CVCL/CCVCL`). Anything else
# (a sentence, markup, a link) is not a code, and a record carrying it is refused rather than quoted.
DX_CODE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9/_+\-]{0,31}")


def load_dx_mapping(folder: str | os.PathLike = DEFAULT_MAPPING_DIR) -> tuple[dict[str, str], dict[str, str]]:
    """(SNOMED code -> name, abbreviation -> SNOMED code) from the Challenge's mapping tables in `folder`."""
    names, codes = {}, {}
    for table in MAPPING_TABLES:
        path = Path(folder) / table
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: pass the folder holding the Challenge's {MAPPING_TABLES}")
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                missing = {"Dx", "SNOMEDCTCode", "Abbreviation"} - set(row)
                if missing:
                    raise ValueError(f"{path} lacks columns {sorted(missing)}")
                names[row["SNOMEDCTCode"].strip()] = row["Dx"].strip()
                codes.setdefault(row["Abbreviation"].strip(), row["SNOMEDCTCode"].strip())
    return names, codes


@cache
def _default_mapping() -> tuple[dict[str, str], dict[str, str]]:
    """The shipped tables, read once per process (every uploaded or single-file record names its codes)."""
    return load_dx_mapping(DEFAULT_MAPPING_DIR)


def _default_abbreviations() -> dict[str, str]:
    return _default_mapping()[1]


def _snomed_code(system: str, code: str, abbreviations: dict[str, str] | None) -> str | None:
    """The SNOMED-CT code of a Challenge statement (a CinC 2020 abbreviation through the mapping tables)."""
    if system == SNOMED_SYSTEM:
        return code
    if system == ABBREVIATION_SYSTEM:
        table = _default_abbreviations() if abbreviations is None else abbreviations
        return table.get(ABBREVIATION_ALIASES.get(code, code))
    return None


def scp_label(system: str, code: str, abbreviations: dict[str, str] | None = None) -> str | None:
    """The SCP-ECG statement a Challenge statement counts as for the PTB-XL task labels (the Challenge's scoring
    equivalences: RBBB as CRBBB, PAC/SVPB, PVC/VPB), None when there is none or the system is not the Challenge's.

    `abbreviations` (abbreviation -> SNOMED-CT code) defaults to the shipped mapping tables'.
    """
    if system == ABBREVIATION_SYSTEM and code in EXTRA_TO_SCP:
        return EXTRA_TO_SCP[code]
    return SNOMED_TO_SCP.get(_snomed_code(system, code, abbreviations) or "")


def scp_equivalent(system: str, code: str, abbreviations: dict[str, str] | None = None) -> str | None:
    """The SCP-ECG statement of the same meaning as a Challenge statement, for the CQA's text and retrieval: the
    label (`scp_label`) except for a bundle branch block of unstated completeness, which has none."""
    if _snomed_code(system, code, abbreviations) in UNSPECIFIED_COMPLETENESS:
        return None
    return scp_label(system, code, abbreviations)


def header_fields(comments: list[str]) -> dict[str, str]:
    """`# Key: value` comment lines -> {key: value} (first occurrence wins)."""
    fields: dict[str, str] = {}
    for line in comments:
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), value.strip())
    return fields


def dx_statements(
    record: object, dx: str, snomed_names: dict[str, str], abbreviations: dict[str, str]
) -> list[dict[str, str]]:
    """A `Dx` header field -> statements (system, code, text); SNOMED codes are named by the mapping tables
    (`load_dx_mapping`), a code they do not name is kept as its code."""
    entries = []
    for code in (c.strip() for c in dx.split(",")):
        if not code:
            continue
        if not DX_CODE_RE.fullmatch(code):
            raise RecordError(
                record,
                f"Dx code {code[:60]!r}{'...' if len(code) > 60 else ''} is not a SNOMED-CT code or an abbreviation "
                "(letters, digits, '/', '_', '+', '-'; at most 32 characters)",
                source=SOURCE,
            )
        if code.isdigit():
            entries.append({"system": SNOMED_SYSTEM, "code": code, "text": snomed_names.get(code, code)})
        elif code in EXTRA_ABBREVIATIONS:
            entries.append({"system": ABBREVIATION_SYSTEM, "code": code, "text": EXTRA_ABBREVIATIONS[code]})
        else:
            snomed = abbreviations.get(ABBREVIATION_ALIASES.get(code, code))
            text = snomed_names.get(snomed, code) if snomed else code
            entries.append({"system": ABBREVIATION_SYSTEM, "code": code, "text": text})
        if len(entries) > 64:
            raise RecordError(record, f"Dx lists more than 64 codes: {dx[:80]!r}", source=SOURCE)
    return entries


def header_statements(name: str, comments: list[str]) -> list[dict[str, str]]:
    """The statements one WFDB header's comment lines carry: a Challenge-style `# Dx:` field named with the
    shipped mapping tables (`dx_statements`), else none. `name` (the file) names the record in errors."""
    dx = header_fields(list(comments)).get("dx", "")
    if not dx:
        return []
    snomed_names, abbreviations = _default_mapping()
    return dx_statements(name, dx, snomed_names, abbreviations)


def statement_scp_codes(
    statements: list[dict[str, str]], abbreviations: dict[str, str] | None = None
) -> dict[str, float]:
    """The SCP-ECG statements the record's codes correspond to (likelihood 100: the Challenge gives none);
    `abbreviations`: CinC 2020 abbreviation -> SNOMED code, the shipped tables' by default."""
    abbreviations = _default_abbreviations() if abbreviations is None else abbreviations
    codes = {}
    for entry in statements:
        scp = scp_label(entry["system"], entry["code"], abbreviations)
        if scp:
            codes[scp] = 100.0
    return codes


class ChallengeSource:
    """Every record below `folder`, as a source for `esi.data.prepare.prepare_source`.

    Args:
        sampling_rate: rate of the prepared signals (Hz); records at other rates are resampled.
        mapping_dir: folder with the Challenge's `dx_mapping_*.csv` (default: the shipped copies).
    """

    name = "challenge"

    def __init__(
        self, folder: str | os.PathLike, sampling_rate: int = 100, mapping_dir: str | os.PathLike = DEFAULT_MAPPING_DIR
    ):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"{self.folder} is not a folder of Challenge records")
        self.sampling_rate = sampling_rate
        self.mapping_dir = Path(mapping_dir)
        self.snomed_names, self.abbreviations = load_dx_mapping(self.mapping_dir)

    def identity(self) -> dict:
        return {
            "name": self.name,
            "dir": str(self.folder.resolve()),
            "sampling_rate": self.sampling_rate,
            "mapping_dir": str(self.mapping_dir.resolve()),
        }

    def features(self) -> Features:
        return prepared_features(None, scp_reference()[1])

    @cached_property
    def record_names(self) -> list[str]:
        names = sorted(str(p.relative_to(self.folder).with_suffix("")) for p in self.folder.rglob("*.hea"))
        if not names:
            raise FileNotFoundError(f"no .hea files below {self.folder}: is it a Challenge folder?")
        return names

    def rows(self) -> list[dict]:
        return [{"ecg_id": i + 1, "record_name": name} for i, name in enumerate(self.record_names)]

    def example(self, row: dict) -> dict:
        name, ecg_id = row["record_name"], row["ecg_id"]
        base = inside(self.folder, name, name, SOURCE)
        read = read_wfdb(base, name, SOURCE, self.sampling_rate)
        fields = header_fields(read.comments)
        statements = dx_statements(name, fields.get("dx", ""), self.snomed_names, self.abbreviations)
        scp_codes = statement_scp_codes(statements, self.abbreviations)
        return wfdb_example(
            read,
            ecg_id=ecg_id,
            patient_id=ecg_id,
            scp_codes=scp_codes,
            age=parse_age(name, fields.get("age"), SOURCE),
            sex=parse_sex(name, fields.get("sex"), SOURCE),
            strat_fold=hash_fold(name),
            source="challenge",
            record_name=name,
            statements=statements,
        )
