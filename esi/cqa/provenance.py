"""Which sources a captioned dataset was made from, and the licence and attribution the card owes each.

The captions carry no `source` column; the prepared dataset they were made from does (`esi.data.schema`), so the
sources are read there for the captioned `ecg_id`s. Facts (licences, citations) are those of the sources' own
published terms and of the READMEs of the data folders they were read from.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

# Prepared datasets written before the `source` column existed are PTB-XL's (the only reader then).
LEGACY_SOURCE = "ptb-xl"
UNKNOWN_LICENSE = "unknown: set by the data owner"


@dataclass(frozen=True)
class Licence:
    hub_id: str  # the Hub's `license:` identifier
    name: str
    link: str


CC_BY_4 = Licence(
    "cc-by-4.0", "Creative Commons Attribution 4.0 International", "https://creativecommons.org/licenses/by/4.0/"
)
ODBL = Licence("odbl", "Open Data Commons Open Database License v1.0", "https://opendatacommons.org/licenses/odbl/1-0/")
OWNER = Licence("other", UNKNOWN_LICENSE, "")

SOURCE_LICENCES = {"ptb-xl": CC_BY_4, "challenge": CC_BY_4, "mimic-iv-ecg": ODBL, "wfdb-folder": OWNER}

PHYSIONET = "Goldberger A, et al. PhysioBank, PhysioToolkit, and PhysioNet. *Circulation* 101(23):e215-e220 (2000)."
PTBXL_CITATIONS = (
    "Wagner P, Strodthoff N, Bousseljot R-D, Kreiseler D, Lunze FI, Samek W, Schaeffter T. PTB-XL, a large publicly "
    "available electrocardiography dataset. *Scientific Data* 7, 154 (2020). doi:10.1038/s41597-020-0495-6",
    "Wagner P, et al. PTB-XL, a large publicly available electrocardiography dataset (version 1.0.3). "
    "PhysioNet (2022). doi:10.13026/x4td-x982",
)
CHALLENGE_CITATIONS = (
    "Reyna MA, et al. Will Two Do? Varying Dimensions in Electrocardiography: The PhysioNet/Computing in Cardiology "
    "Challenge 2021. *Computing in Cardiology* 48 (2021).",
    "Perez Alday EA, et al. Classification of 12-lead ECGs: the PhysioNet/Computing in Cardiology Challenge 2020. "
    "*Physiological Measurement* 41 (2020).",
)
# Challenge record names start with their database's letters (the Challenge's naming; see the data READMEs).
# Longest prefix first, so "HR" is not read as another database's "H".
CHALLENGE_DATABASES = (
    (
        "HR",
        "PTB-XL",
        PTBXL_CITATIONS[0],
    ),
    (
        "JS",
        "Chapman-Shaoxing/Ningbo (Ningbo First Hospital)",
        "Zheng J, et al. (Chapman-Shaoxing and Ningbo 12-lead ECG databases). *Scientific Data* (2020).",
    ),
    (
        "A",
        "CPSC 2018 (China Physiological Signal Challenge 2018)",
        (
            "Liu F, et al. An Open Access Database for Evaluating the Algorithms of Electrocardiogram Rhythm and "
            "Morphology Abnormality Detection. *J Med Imaging Health Inform* 8(7):1368-1373 (2018)."
        ),
    ),
    ("E", "Georgia 12-lead ECG Challenge database", ""),
)
MIMIC_CITATION = (
    "Gow B, et al. MIMIC-IV-ECG: Diagnostic Electrocardiogram Matched Subset (version 1.0). PhysioNet (2023). "
    "https://physionet.org/content/mimic-iv-ecg/"
)
SOURCE_NAMES = {
    "ptb-xl": "PTB-XL",
    "challenge": "PhysioNet/CinC Challenge 2020/2021 data",
    "mimic-iv-ecg": "MIMIC-IV-ECG",
    "wfdb-folder": "a user's own WFDB records",
}


def challenge_database(record_name: str) -> str:
    """The contributing database of a Challenge record, from its name's prefix (the Challenge's naming)."""
    stem = Path(record_name).name
    for prefix, name, _ in CHALLENGE_DATABASES:
        if stem.startswith(prefix) and stem[len(prefix) :][:1].isdigit():
            return name
    letters = stem.rstrip("0123456789") or stem
    return f"unidentified database (record names starting {letters!r})"


def dataset_sources(dataset_dir: str | os.PathLike, ecg_ids: Iterable[int] | None = None) -> dict[str, dict[str, int]]:
    """{source: {contributing database: records}} of the prepared dataset's rows with the given `ecg_id`s (all rows
    when None). The database is the source itself except for Challenge data, named per record."""
    import datasets

    wanted = None if ecg_ids is None else set(map(int, ecg_ids))
    prepared = datasets.load_from_disk(str(dataset_dir))
    parts = prepared.values() if isinstance(prepared, datasets.DatasetDict) else [prepared]
    counts: dict[str, Counter[str]] = {}
    for part in parts:
        names = [c for c in ("ecg_id", "source", "record_name") if c in part.column_names]
        table = part.select_columns(names).to_dict()
        n = len(table["ecg_id"])
        sources = table.get("source") or [LEGACY_SOURCE] * n
        records = table.get("record_name") or [""] * n
        for ecg_id, source, record in zip(table["ecg_id"], sources, records, strict=True):
            if wanted is not None and int(ecg_id) not in wanted:
                continue
            database = challenge_database(record) if source == "challenge" else SOURCE_NAMES.get(source, source)
            counts.setdefault(source, Counter())[database] += 1
    return {source: dict(sorted(c.items())) for source, c in sorted(counts.items())}


def licence_front_matter(sources: Mapping[str, Mapping[str, int]]) -> str:
    """The card's `license:` YAML lines: one Hub id when every source has the same known licence, else `other`
    with the name and link of each licence involved."""
    licences = list(dict.fromkeys(SOURCE_LICENCES.get(s, OWNER) for s in sources)) or [OWNER]
    if len(licences) == 1 and licences[0] is not OWNER:
        return f"license: {licences[0].hub_id}"
    fields = {
        "license": "other",
        "license_name": " + ".join(lic.hub_id if lic is not OWNER else "unknown-owner-set" for lic in licences),
        "license_link": [lic.link for lic in licences if lic.link] or "LICENSE.txt",
    }
    return yaml.safe_dump(fields, sort_keys=False).rstrip()


def licence_file_text(sources: Mapping[str, Mapping[str, int]]) -> str:
    """`LICENSE.txt` of a captioned dataset that is not PTB-XL's alone: each source's licence, by name and link."""
    lines = ["The rows of this dataset keep the licence of the source their ECG came from:", ""]
    for source in sources:
        lic = SOURCE_LICENCES.get(source, OWNER)
        lines.append(f"- {SOURCE_NAMES.get(source, source)}: {lic.name}" + (f" ({lic.link})" if lic.link else ""))
    return "\n".join(lines) + "\n\nSee the dataset card (README.md) for what each licence asks and what to cite.\n"


def licence_section(sources: Mapping[str, Mapping[str, int]]) -> str:
    """Markdown for the card's "License and attribution" section: per source, its licence, what that means for
    these captions, and what to cite."""
    blocks = []
    citations: list[str] = []
    for source, databases in sources.items():
        n = sum(databases.values())
        if source == "ptb-xl":
            blocks.append(
                f"- **PTB-XL** ({n:,} records): released under CC BY 4.0. The captions and measurements of these "
                "records are derived from it and released under the same licence."
            )
            citations += [*PTBXL_CITATIONS, PHYSIONET]
        elif source == "challenge":
            listed = ", ".join(f"{db} ({k:,})" for db, k in databases.items())
            blocks.append(
                f"- **PhysioNet/CinC Challenge 2020/2021 data** ({n:,} records), released under CC BY 4.0. "
                f"Contributing databases found in this dataset: {listed}. The captions and measurements of these "
                "records are derived from them and released under CC BY 4.0."
            )
            citations += [*CHALLENGE_CITATIONS, PHYSIONET]
            for _, name, cite in CHALLENGE_DATABASES:
                if name in databases and cite:
                    citations.append(cite)
        elif source == "mimic-iv-ecg":
            blocks.append(
                f"- **MIMIC-IV-ECG** ({n:,} records), released under the Open Data Commons Open Database License "
                "v1.0 (ODbL). The captions and measurements of these records form a derived database of it, so "
                "they are released under the ODbL v1.0 as well (share-alike): whoever publishes a database made "
                "from them must offer it under the ODbL too, and keep this attribution."
            )
            citations += [MIMIC_CITATION, PHYSIONET]
        else:
            blocks.append(
                f"- **{SOURCE_NAMES.get(source, source)}** ({n:,} records): licence {UNKNOWN_LICENSE}. The ESI "
                "project does not know the terms of these records: the data owner decides whether, and under "
                "which licence, captions derived from them may be shared, and what must be cited."
            )
    if len(sources) > 1:
        blocks.append(
            "\nThe sources carry different terms, so the dataset as a whole is marked `license: other`: each "
            "row keeps the terms of the source its record came from (join on `ecg_id` with the prepared dataset's "
            "`source` column)."
        )
    citations.append(
        "Yu H, Guo P, Sano A. ECG Semantic Integrator (ESI): A Foundation ECG Model Pretrained with LLM-Enhanced "
        "Cardiological Text. arXiv:2405.19366 (2024)."
    )
    cites = "\n".join(f"- {c}" for c in dict.fromkeys(citations))
    return "\n".join(blocks) + f"\n\nPlease cite:\n\n{cites}"


def sources_title(sources: Mapping[str, Mapping[str, int]]) -> str:
    """The sources as the card's title names them, e.g. "PhysioNet/CinC Challenge + MIMIC-IV-ECG"."""
    short = {"challenge": "PhysioNet/CinC Challenge", "wfdb-folder": "WFDB records"}
    return " + ".join(short.get(s, SOURCE_NAMES.get(s, s)) for s in sources)
