"""The Cardio Query Assistant for records: statements, measurements and retrieved knowledge in, checked captions out.

`Captioner.caption_record` captions one ECG (the app's path); `Captioner.rows` a block of prepared-dataset rows
(`cqa_generate.py`'s path). Both go through the same inputs, backend, faithfulness check and template fallback.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from esi.cqa.backends import CaptionBackend, make_backend
from esi.cqa.consistency import reconcile_with_statements
from esi.cqa.facts import record_facts
from esi.cqa.faithfulness import DiagnosisLexicon, FaithfulnessChecker, withhold_unsafe_statements
from esi.cqa.measurements import EcgMeasurements, measure_ecg
from esi.cqa.options import GenerationOptions
from esi.cqa.prompts import SCP_ECG, CaptionInputs, CaptionRequest, Statement, build_request, is_number
from esi.cqa.retrieval import HybridRetriever, build_query
from esi.cqa.template_writer import TemplateWriter
from esi.data.challenge import scp_equivalent, scp_label
from esi.data.ptbxl import PTBXL_RESOURCES
from esi.data.record_text import MAX_REPORT_CHARS, clean_record_text, without_invisible
from esi.knowledge import load_knowledge_base

DEFAULT_SCP_STATEMENTS = PTBXL_RESOURCES / "scp_statements.csv"
DEFAULT_PTBXL_LICENSE = PTBXL_RESOURCES / "LICENSE.txt"


@dataclass
class CaptionResult:
    """One record's caption and how it was obtained."""

    caption: str
    faithfulness: str  # one of schema.FAITHFULNESS_OUTCOMES
    issues: list[str]
    inputs: CaptionInputs
    prompt_hash: str


def abnormal_findings(m: EcgMeasurements) -> list[str]:
    """Coarse words for the retrieval query; no numbers, so many records share a cached query."""
    findings = []
    rate = m.heart_rate_bpm
    if is_number(rate):
        findings += ["fast heart rate"] if rate > 100 else ["slow heart rate"] if rate < 60 else []
    if m.rr_irregular:
        findings.append("irregular RR intervals")
    if m.p_wave_absent:
        findings.append("absent P waves")
    if is_number(m.qrs_duration_ms) and m.qrs_duration_ms >= 120:
        findings.append("wide QRS complex")
    if is_number(m.pr_interval_ms) and m.pr_interval_ms > 200:
        findings.append("prolonged PR interval")
    if is_number(m.qtc_bazett_ms) and m.qtc_bazett_ms >= 460:
        findings.append("prolonged QTc")
    if m.qrs_axis_category in ("left", "right", "extreme"):
        findings.append(f"{m.qrs_axis_category} axis deviation")
    if m.low_voltage:
        findings.append("low QRS voltage")
    return findings


def _scp_statements(ecg_id: int, scp_codes: str, descriptions: dict[str, str]) -> dict[str, Statement]:
    try:
        codes = json.loads(scp_codes)
    except (TypeError, json.JSONDecodeError) as err:
        raise ValueError(f"record ecg_id={ecg_id}: scp_codes is not a JSON object ({err})") from None
    if not isinstance(codes, dict):
        raise ValueError(f"record ecg_id={ecg_id}: scp_codes is not a JSON object: {scp_codes!r}")
    unknown = [c for c in codes if c not in descriptions]
    if unknown:
        raise ValueError(f"record ecg_id={ecg_id}: unknown SCP code(s) {unknown} (not in scp_statements.csv)")
    return {code: Statement(code, descriptions[code], float(likelihood)) for code, likelihood in codes.items()}


def record_statements(
    ecg_id: int, scp_codes: str, entries: Sequence[Mapping] | None, descriptions: dict[str, str]
) -> list[Statement]:
    """The record's statements, each in its own coding system, in the prepared `statements` column's order.

    SCP-ECG entries take their likelihood from `scp_codes`; other entries (Challenge SNOMED-CT codes and
    abbreviations, MIMIC-IV-ECG machine report lines, labels CSV text) keep their code and text and carry
    the SCP-ECG statement of the same meaning where one is known. An SCP code of `scp_codes` that no entry
    stands for is added, so nothing the labels use is lost; without the column (datasets prepared before
    it existed) the statements are `scp_codes`.
    """
    scp = _scp_statements(ecg_id, scp_codes, descriptions)
    if entries is None:
        return list(scp.values())
    statements = []
    labelled = set()  # SCP codes the entries stand for as labels, though not always in meaning (RBBB -> CRBBB)
    for entry in entries:
        # Cleaned here too, for datasets prepared before their sources cleaned statement text.
        system, code = entry["system"], clean_record_text(entry["code"] or "")
        text = clean_record_text(entry["text"] or "")
        if system == SCP_ECG:
            if code in scp:
                statements.append(scp[code])
            continue
        if not text:
            raise ValueError(f"record ecg_id={ecg_id}: a {system} statement {code!r} has no text")
        statements.append(Statement(code, text, 0.0, system, scp_equivalent(system, code)))
        labelled.add(scp_label(system, code))
    stated = {s.scp for s in statements} | labelled
    return statements + [s for code, s in scp.items() if code not in stated]


def claimed_beyond_statements(statements: Sequence[Statement]) -> list[str]:
    """SCP codes a record carries as labels but not in meaning (an unspecified RBBB labelled CRBBB): background
    about them would claim more than the record states."""
    meant = {s.scp for s in statements}
    labels = {scp_label(s.system, s.code) for s in statements if s.scp is None}
    return sorted(code for code in labels - meant if code)


def _scp_descriptions(dataset_dir: Path, override: str | None) -> dict[str, str]:
    from esi.data.ptbxl import load_statements

    if override:
        path = Path(override)
        folder = path.parent if path.is_file() else path
    elif (dataset_dir / "scp_statements.csv").is_file():
        folder = dataset_dir
    else:
        folder = DEFAULT_SCP_STATEMENTS.parent
    return {str(code): str(desc) for code, desc in load_statements(folder)["description"].items()}


class Captioner:
    """Turns rows of a prepared dataset (plus their measurements) into output rows."""

    def __init__(self, dataset_dir: Path, options: GenerationOptions, encode_threads: int = 1) -> None:
        self.options = options
        self.descriptions = _scp_descriptions(dataset_dir, options.scp_statements)
        knowledge = load_knowledge_base()
        self.retriever = HybridRetriever(knowledge, encoder_path=options.encoder_path, encode_threads=encode_threads)
        self.checker = FaithfulnessChecker(DiagnosisLexicon.build(self.descriptions, knowledge), knowledge=knowledge)
        if options.text_variant != "full" and options.backend != "template":
            raise ValueError(f"text_variant {options.text_variant!r} needs the template backend, not {options.backend}")
        self.writer = TemplateWriter(self.checker, options.text_variant)
        llm_options = {}
        if options.backend != "template":
            llm_options = {
                "max_new_tokens": options.max_new_tokens,
                "temperature": options.temperature,
                "top_p": options.top_p,
                "model_id": options.model_id,
            }
            if options.backend == "transformers":
                llm_options["batch_size"] = options.batch_size
            else:
                llm_options |= {
                    "tensor_parallel_size": options.tensor_parallel_size,
                    "max_model_len": options.max_model_len,
                    "python": options.vllm_python,
                }
        self.backend: CaptionBackend = make_backend(options.backend, self.writer, options.model, **llm_options)

    def inputs(self, rows: dict, measurements: Sequence[EcgMeasurements]) -> list[CaptionInputs]:
        entries = rows.get("statements") or [None] * len(rows["ecg_id"])
        statements = [  # a record's own text is quoted only when it carries no claim a caption may not make
            withhold_unsafe_statements(record_statements(ecg_id, codes, listed, self.descriptions))
            for ecg_id, codes, listed in zip(rows["ecg_id"], rows["scp_codes"], entries, strict=True)
        ]
        measured = [
            reconcile_with_statements(m, [s.scp for s in st if s.scp])
            for st, m in zip(statements, measurements, strict=True)
        ]
        queries = [
            build_query([s.scp or "" for s in st], [s.description for s in st], abnormal_findings(m))
            for st, m in zip(statements, measured, strict=True)
        ]
        passages = self.retriever.retrieve_batch(
            queries,
            [record_facts([s.scp for s in st if s.scp], m) for st, m in zip(statements, measured, strict=True)],
            k=self.options.retrieval_k,
            excluded_codes_list=[claimed_beyond_statements(st) for st in statements],
        )
        return [
            CaptionInputs(
                ecg_id=int(rows["ecg_id"][i]),
                age=rows["age"][i],
                sex=rows["sex"][i],
                report=clean_record_text(rows["report"][i] or "", MAX_REPORT_CHARS),
                statements=statements[i],
                measurements=measured[i],
                passages=passages[i],
                seconds=len(rows["signal"][i][0]) / float(rows["sampling_rate"][i]) if "signal" in rows else 10.0,
            )
            for i in range(len(statements))
        ]

    def captions(self, requests: list[CaptionRequest]) -> list[tuple[str, str, list[str]]]:
        """(caption, faithfulness outcome, issues) per request, with bounded regeneration."""
        templates = [self.writer.write(r.inputs) for r in requests]
        for request, text in zip(requests, templates, strict=True):
            issues = self.checker.check(text, request.inputs, require_complete=self.writer.complete)
            if issues:  # the writer is faithful by construction; anything else is a bug to fix
                raise RuntimeError(f"record ecg_id={request.inputs.ecg_id}: template caption failed {issues}")
        if self.backend.name == "template":
            return [(text, "pass", []) for text in templates]

        # What a model writes is stored and shown: no bidi overrides, escapes or zero-width characters in it.
        texts = [without_invisible(text) for text in self.backend.generate(requests)]
        results: list[tuple[str, str, list[str]] | None] = [None] * len(requests)
        rejected: dict[int, list[str]] = {}
        for attempt in range(self.options.max_retries + 1):
            if attempt > 0:
                pending = sorted(rejected.keys() - {i for i, r in enumerate(results) if r is not None})
                if not pending:
                    break
                retry = self.backend.generate([replace(requests[i], attempt=attempt) for i in pending])
                retry = [without_invisible(text) for text in retry]
                candidates = dict(zip(pending, retry, strict=True))
            else:
                candidates = dict(enumerate(texts))
            for i, text in candidates.items():
                issues = self.checker.check(text, requests[i].inputs)
                if not issues:
                    results[i] = (text, "pass" if attempt == 0 else "pass_after_retry", rejected.get(i, []))
                else:
                    rejected.setdefault(i, []).extend(f"attempt {attempt + 1}: {issue}" for issue in issues)
        return [
            result if result is not None else (templates[i], "template_fallback", rejected[i])
            for i, result in enumerate(results)
        ]

    def caption_record(
        self,
        signal: np.ndarray,
        sampling_rate: float,
        lead_names: Sequence[str],
        scp_codes: Mapping[str, float],
        age: float | None = None,
        sex: str | None = None,
        report: str = "",
        record_id: str | int = "upload",
        statements: Sequence[Mapping[str, str]] | None = None,
        file_name: str | None = None,
    ) -> tuple[EcgMeasurements, CaptionResult]:
        """Measure and caption one ECG. signal: (leads, samples) in mV; scp_codes: PTB-XL code -> likelihood;
        statements: entries of the prepared `statements` column (system, code, text), if the record has them.

        `record_id` names the record in errors; an integer also seeds the template's phrasing.
        `file_name`: the ECG file's base name, which the prompt then names the record by (its `ecg_id` is 0).
        """
        measurements = measure_ecg(signal, sampling_rate, list(lead_names), ecg_id=record_id)
        row = {
            "ecg_id": [record_id if isinstance(record_id, int) else 0],
            "signal": [signal],
            "sampling_rate": [sampling_rate],
            "scp_codes": [json.dumps(dict(scp_codes))],
            "age": [age],
            "sex": [sex],
            "report": [report],
            "statements": [None if statements is None else list(statements)],
        }
        (inputs,) = self.inputs(row, [measurements])
        inputs = replace(inputs, file_name=file_name)
        request = build_request(inputs)
        ((text, outcome, issues),) = self.captions([request])
        return measurements, CaptionResult(text, outcome, issues, inputs, request.prompt_hash)

    def rows(self, split: str, rows: dict, measurements: Sequence[EcgMeasurements]) -> list[dict]:
        """Output rows (schema.output_features) for a block of prepared rows and their measurements."""
        inputs = self.inputs(rows, measurements)
        requests = [build_request(x) for x in inputs]
        captions: list[tuple[str, str, list[str]]] = []
        step = max(1, self.options.batch_size)
        for start in range(0, len(requests), step):
            captions += self.captions(requests[start : start + step])
        return [
            {
                "ecg_id": x.ecg_id,
                "split": split,
                "caption": caption,
                **x.measurements.to_columns(),
                "statements": [s.code for s in x.statements],
                "statement_descriptions": [s.description for s in x.statements],
                "retrieved_passage_ids": [p.id for p in x.passages],
                "backend": self.backend.name,
                "model_id": self.backend.model_id,
                "prompt_hash": request.prompt_hash,
                "faithfulness": outcome,
                "faithfulness_issues": issues,
            }
            for x, request, (caption, outcome, issues) in zip(inputs, requests, captions, strict=True)
        ]

    def close(self) -> None:
        self.backend.close()
