"""Prepared ECG dataset -> captioned dataset (Parquet shards + dataset card), resumable and shardable.

Work is cut into units: per split, consecutive blocks of ``records_per_file`` rows, each written as
``data/{split}-{index:05d}-of-{count:05d}.parquet`` (the file naming ``datasets.load_dataset``
maps to splits). The cut depends only on the dataset, the splits and ``num_samples``, never on
``num_shards``, so scale-out jobs (``num_shards`` > 1, one ``shard_index`` each) write disjoint
files of one layout and ``merge_outputs`` just gathers them.

A unit is committed atomically: written to a temporary file, ``os.replace``d into place, then
appended to ``.cqa/journal.jsonl``. ``resume=True`` skips journaled units whose file exists and
redoes the rest, so an interrupted run ends with every record exactly once.
"""

from __future__ import annotations

import importlib.resources
import json
import logging
import os
import shutil
import time
import typing
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from multiprocessing import get_context
from pathlib import Path

import datasets
from datasets import Features, List, Value, load_from_disk
from tqdm.auto import tqdm

from esi.cqa.backends import CaptionBackend, make_backend
from esi.cqa.consistency import reconcile_with_statements
from esi.cqa.faithfulness import DiagnosisLexicon, FaithfulnessChecker
from esi.cqa.knowledge import load_knowledge_base
from esi.cqa.measurements import EcgMeasurements, measure_ecg
from esi.cqa.prompts import CaptionInputs, CaptionRequest, Statement, build_request, is_number
from esi.cqa.retrieval import HybridRetriever, build_query
from esi.cqa.template_writer import TemplateWriter

logger = logging.getLogger(__name__)

STATE_DIR = ".cqa"  # hidden: datasets ignores it and push_to_hub skips it
JOURNAL = "journal.jsonl"
RUN_CONFIG = "run.json"
# PTB-XL's statement table and licence ship as package data (CC BY 4.0, see the folder's README).
PTBXL_RESOURCES = Path(str(importlib.resources.files("esi.data") / "resources" / "ptbxl"))
DEFAULT_SCP_STATEMENTS = PTBXL_RESOURCES / "scp_statements.csv"
DEFAULT_PTBXL_LICENSE = PTBXL_RESOURCES / "LICENSE.txt"
FAITHFULNESS_OUTCOMES = ("pass", "pass_after_retry", "template_fallback")
# Options that change what a unit contains: a resumed run or a merge must agree on all of them.
IDENTITY_KEYS = (
    "dataset",
    "splits",
    "num_samples",
    "records_per_file",
    "backend",
    "model",
    "model_id",
    "max_new_tokens",
    "temperature",
    "top_p",
    "max_retries",
    "retrieval_k",
    "encoder_path",
    "num_shards",
)


@dataclass
class GenerationOptions:
    backend: str = "template"
    model: str | None = None
    model_id: str | None = None
    splits: list[str] | None = None
    num_samples: int | None = None  # per split, first rows
    records_per_file: int = 500
    batch_size: int = 64
    max_new_tokens: int = 384
    temperature: float = 0.7
    top_p: float = 0.95
    tensor_parallel_size: int = 1
    max_model_len: int = 4096
    vllm_python: str | None = None
    max_retries: int = 2
    retrieval_k: int = 4
    encoder_path: str | None = "default"
    num_shards: int = 1
    shard_index: int = 0
    num_workers: int = 2
    resume: bool = False
    scp_statements: str | None = None
    ptbxl_license: str | None = None


@dataclass(frozen=True)
class WorkUnit:
    split: str
    index: int
    count: int
    start: int
    stop: int

    @property
    def filename(self) -> str:
        return f"data/{self.split}-{self.index:05d}-of-{self.count:05d}.parquet"


def plan_units(num_rows: dict[str, int], records_per_file: int) -> list[WorkUnit]:
    """All units of a run, split by split, independent of sharding."""
    if records_per_file < 1:
        raise ValueError(f"records_per_file must be at least 1, got {records_per_file}")
    units = []
    for split, n in num_rows.items():
        count = max(1, -(-n // records_per_file))
        units += [
            WorkUnit(split, i, count, i * records_per_file, min(n, (i + 1) * records_per_file)) for i in range(count)
        ]
    return units


def shard_units(units: Sequence[WorkUnit], num_shards: int, shard_index: int) -> list[WorkUnit]:
    """Round-robin over the global unit order: job ``shard_index`` of ``num_shards`` takes every n-th unit."""
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise ValueError(f"need 0 <= shard_index < num_shards, got shard {shard_index} of {num_shards}")
    return [u for i, u in enumerate(units) if i % num_shards == shard_index]


def measurement_features() -> dict[str, Value]:
    """Arrow types of ``EcgMeasurements.to_columns()``, fixed so every shard has the same schema."""
    hints = typing.get_type_hints(EcgMeasurements)
    out = {}
    for key in EcgMeasurements().to_columns():
        hint = str(hints.get(key, ""))
        if "bool" in hint:
            out[key] = Value("bool")
        elif "float" in hint or key.endswith(("_ms", "_mv", "_bpm", "_deg")):
            out[key] = Value("float64")
        else:
            out[key] = Value("string")
    return out


def output_features() -> Features:
    strings = List(Value("string"))
    return Features(
        {
            "ecg_id": Value("int32"),
            "split": Value("string"),
            "caption": Value("string"),
            **measurement_features(),
            "statements": strings,
            "statement_descriptions": strings,
            "retrieved_passage_ids": strings,
            "backend": Value("string"),
            "model_id": Value("string"),
            "prompt_hash": Value("string"),
            "faithfulness": Value("string"),
            "faithfulness_issues": strings,
        }
    )


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


def _statements(ecg_id: int, scp_codes: str, descriptions: dict[str, str]) -> list[Statement]:
    try:
        codes = json.loads(scp_codes)
    except (TypeError, json.JSONDecodeError) as err:
        raise ValueError(f"record ecg_id={ecg_id}: scp_codes is not a JSON object ({err})") from None
    if not isinstance(codes, dict):
        raise ValueError(f"record ecg_id={ecg_id}: scp_codes is not a JSON object: {scp_codes!r}")
    unknown = [c for c in codes if c not in descriptions]
    if unknown:
        raise ValueError(f"record ecg_id={ecg_id}: unknown SCP code(s) {unknown} (not in scp_statements.csv)")
    return [Statement(code, descriptions[code], float(likelihood)) for code, likelihood in codes.items()]


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

    def __init__(self, dataset_dir: Path, options: GenerationOptions) -> None:
        self.options = options
        self.descriptions = _scp_descriptions(dataset_dir, options.scp_statements)
        knowledge = load_knowledge_base()
        self.retriever = HybridRetriever(knowledge, encoder_path=options.encoder_path)
        self.checker = FaithfulnessChecker(DiagnosisLexicon.build(self.descriptions, knowledge))
        self.writer = TemplateWriter(self.checker)
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
        statements = [
            _statements(ecg_id, codes, self.descriptions)
            for ecg_id, codes in zip(rows["ecg_id"], rows["scp_codes"], strict=True)
        ]
        queries = [
            build_query([s.code for s in st], [s.description for s in st], abnormal_findings(m))
            for st, m in zip(statements, measurements, strict=True)
        ]
        passages = self.retriever.retrieve_batch(
            queries, k=self.options.retrieval_k, required_codes_list=[[s.code for s in st] for st in statements]
        )
        return [
            CaptionInputs(
                ecg_id=int(rows["ecg_id"][i]),
                age=rows["age"][i],
                sex=rows["sex"][i],
                report=rows["report"][i] or "",
                statements=statements[i],
                measurements=reconcile_with_statements(measurements[i], [s.code for s in statements[i]]),
                passages=passages[i],
            )
            for i in range(len(statements))
        ]

    def captions(self, requests: list[CaptionRequest]) -> list[tuple[str, str, list[str]]]:
        """(caption, faithfulness outcome, issues) per request, with bounded regeneration."""
        templates = [self.writer.write(r.inputs) for r in requests]
        for request, text in zip(requests, templates, strict=True):
            issues = self.checker.check(text, request.inputs)
            if issues:  # the writer is faithful by construction; anything else is a bug to fix
                raise RuntimeError(f"record ecg_id={request.inputs.ecg_id}: template caption failed {issues}")
        if self.backend.name == "template":
            return [(text, "pass", []) for text in templates]

        texts = self.backend.generate(requests)
        results: list[tuple[str, str, list[str]] | None] = [None] * len(requests)
        rejected: dict[int, list[str]] = {}
        for attempt in range(self.options.max_retries + 1):
            if attempt > 0:
                pending = sorted(rejected.keys() - {i for i, r in enumerate(results) if r is not None})
                if not pending:
                    break
                retry = self.backend.generate([replace(requests[i], attempt=attempt) for i in pending])
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

    def rows(self, unit: WorkUnit, rows: dict, measurements: Sequence[EcgMeasurements]) -> list[dict]:
        inputs = self.inputs(rows, measurements)
        requests = [build_request(x) for x in inputs]
        captions: list[tuple[str, str, list[str]]] = []
        step = max(1, self.options.batch_size)
        for start in range(0, len(requests), step):
            captions += self.captions(requests[start : start + step])
        return [
            {
                "ecg_id": x.ecg_id,
                "split": unit.split,
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


class _Measurer:
    """Measures a unit's signals in a process pool while the main process captions the previous one."""

    def __init__(self, num_workers: int) -> None:
        self.pool = None
        if num_workers > 1:
            # forkserver: safe with torch threads in this process; neurokit2 loads once per worker.
            self.pool = ProcessPoolExecutor(max_workers=num_workers, mp_context=get_context("forkserver"))

    def submit(self, rows: dict) -> Iterator[EcgMeasurements]:
        n = len(rows["ecg_id"])
        args = (list(rows["signal"]), rows["sampling_rate"], rows["lead_names"], rows["ecg_id"])
        if self.pool is None:
            return iter([measure_ecg(*a) for a in zip(*args, strict=True)])
        return self.pool.map(measure_ecg, *args, chunksize=max(1, min(16, n // 8)))

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)


def _read_journal(output_dir: Path) -> dict[str, dict]:
    path = output_dir / STATE_DIR / JOURNAL
    done: dict[str, dict] = {}
    if not path.exists():
        return done
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a crash: that unit is simply redone
            continue
        if (output_dir / entry["file"]).is_file():
            done[entry["file"]] = entry
    return done


def _append_journal(output_dir: Path, entry: dict) -> None:
    with open(output_dir / STATE_DIR / JOURNAL, "a") as f:
        f.write(json.dumps(entry) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _write_unit(output_dir: Path, unit: WorkUnit, rows: list[dict]) -> None:
    final = output_dir / unit.filename
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    datasets.Dataset.from_list(rows, features=output_features()).to_parquet(str(tmp))
    os.replace(tmp, final)
    _append_journal(output_dir, {"file": unit.filename, "split": unit.split, "index": unit.index, "rows": len(rows)})


def _write_json_atomic(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True))
    os.replace(tmp, path)


def _prepare_output_dir(output_dir: Path, config: dict, resume: bool) -> None:
    state = output_dir / STATE_DIR
    if output_dir.exists() and any(output_dir.iterdir()):
        if not resume:
            raise FileExistsError(
                f"output directory {output_dir} is not empty; pass --resume to continue the run there, "
                "or choose an empty directory"
            )
        if not (state / RUN_CONFIG).is_file():
            raise FileExistsError(f"{output_dir} is not empty and holds no CQA run ({STATE_DIR}/{RUN_CONFIG})")
        previous = json.loads((state / RUN_CONFIG).read_text())
        changed = [k for k in IDENTITY_KEYS + ("shard_index",) if previous.get(k) != config.get(k)]
        if changed:
            details = ", ".join(f"{k}: {previous.get(k)!r} -> {config.get(k)!r}" for k in changed)
            raise ValueError(f"cannot resume {output_dir} with different options ({details})")
    state.mkdir(parents=True, exist_ok=True)
    for stale in (output_dir / "data").glob(".*.tmp-*") if (output_dir / "data").exists() else []:
        stale.unlink()  # a unit interrupted while being written
    _write_json_atomic(state / RUN_CONFIG, config)


def _dataset_identity(dataset_dict: datasets.DatasetDict, splits: Sequence[str]) -> dict:
    return {s: {"fingerprint": dataset_dict[s]._fingerprint, "num_rows": dataset_dict[s].num_rows} for s in splits}


def generate_captions(
    dataset_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    backend: str = "template",
    **options,
) -> dict:
    """Caption a prepared dataset into ``output_dir``; options are ``GenerationOptions`` fields.

    Returns a summary: rows written by this call, records/s, faithfulness counts, and whether the
    output holds every unit (then it also has a dataset card and loads with ``load_dataset``).
    """
    opts = GenerationOptions(backend=backend, **options)
    dataset_dir, output_dir = Path(dataset_dir), Path(output_dir)
    dataset_dict = load_from_disk(str(dataset_dir))
    if not isinstance(dataset_dict, datasets.DatasetDict):
        raise ValueError(f"{dataset_dir} holds a single Dataset; expected a prepared DatasetDict with splits")
    splits = opts.splits or list(dataset_dict.keys())
    missing = [s for s in splits if s not in dataset_dict]
    if missing:
        raise ValueError(f"split(s) {missing} not in {dataset_dir} (has {list(dataset_dict.keys())})")
    if opts.num_samples is not None and opts.num_samples < 1:
        raise ValueError(f"num_samples must be positive, got {opts.num_samples}")
    num_rows = {s: min(dataset_dict[s].num_rows, opts.num_samples or dataset_dict[s].num_rows) for s in splits}
    all_units = plan_units(num_rows, opts.records_per_file)
    my_units = shard_units(all_units, opts.num_shards, opts.shard_index)

    config = {k: v for k, v in asdict(opts).items() if k not in ("resume", "num_workers", "vllm_python")}
    config |= {"dataset": _dataset_identity(dataset_dict, splits), "splits": splits}
    config["units"] = [u.filename for u in all_units]
    config["dataset_dir"] = str(dataset_dir.resolve())
    _prepare_output_dir(output_dir, config, opts.resume)
    done = _read_journal(output_dir)
    todo = [u for u in my_units if u.filename not in done]

    captioner = Captioner(dataset_dir, opts) if todo else None
    measurer = _Measurer(opts.num_workers) if todo else None
    counts: Counter[str] = Counter()
    written = 0
    started = time.perf_counter()
    total = sum(u.stop - u.start for u in my_units)
    bar = tqdm(total=total, initial=total - sum(u.stop - u.start for u in todo), unit="rec", desc="captions")
    try:
        tables = {s: dataset_dict[s].with_format("numpy", columns=["signal"], output_all_columns=True) for s in splits}

        def load(unit: WorkUnit) -> tuple[dict, Iterator[EcgMeasurements]]:
            rows = tables[unit.split][unit.start : unit.stop]
            return rows, measurer.submit(rows)

        pending = load(todo[0]) if todo else None
        for position, unit in enumerate(todo):
            rows, measured = pending
            if position + 1 < len(todo):
                pending = load(todo[position + 1])  # measured by the pool while this unit is captioned
            out_rows = captioner.rows(unit, rows, list(measured))
            _write_unit(output_dir, unit, out_rows)
            counts.update(r["faithfulness"] for r in out_rows)
            written += len(out_rows)
            bar.update(len(out_rows))
    finally:
        bar.close()
        if measurer is not None:
            measurer.close()
        if captioner is not None:
            captioner.close()
    elapsed = time.perf_counter() - started
    complete = finalize_output(output_dir)
    return {
        "output_dir": str(output_dir),
        "rows_written": written,
        "seconds": elapsed,
        "records_per_second": written / elapsed if elapsed > 0 else 0.0,
        "faithfulness": dict(counts),
        "complete": complete,
    }


def output_stats(output_dir: Path) -> dict:
    """Rows per split and faithfulness outcomes, read back from the committed Parquet files."""
    import pyarrow.parquet as pq

    per_split: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    for path in sorted((output_dir / "data").glob("*.parquet")):
        table = pq.read_table(path, columns=["split", "faithfulness"])
        per_split.update(table.column("split").to_pylist())
        outcomes.update(table.column("faithfulness").to_pylist())
    return {"rows_per_split": dict(per_split), "faithfulness": {k: outcomes.get(k, 0) for k in FAITHFULNESS_OUTCOMES}}


def finalize_output(output_dir: str | os.PathLike) -> bool:
    """Write the dataset card and licence once every unit is present; returns whether it is complete."""
    from esi.cqa.dataset_card import write_dataset_card

    output_dir = Path(output_dir)
    config = json.loads((output_dir / STATE_DIR / RUN_CONFIG).read_text())
    done = _read_journal(output_dir)
    if any(name not in done for name in config["units"]):
        return False
    license_src = Path(config.get("ptbxl_license") or DEFAULT_PTBXL_LICENSE)
    dataset_license = Path(config["dataset_dir"]) / "LICENSE.txt"
    if not config.get("ptbxl_license") and dataset_license.is_file():
        license_src = dataset_license
    shutil.copyfile(license_src, output_dir / "LICENSE.txt")
    write_dataset_card(output_dir, config, output_stats(output_dir))
    return True


def merge_outputs(input_dirs: Sequence[str | os.PathLike], output_dir: str | os.PathLike) -> dict:
    """Join the outputs of scale-out jobs (same options, different shard indices) into one dataset."""
    output_dir = Path(output_dir)
    if output_dir.exists() and any(output_dir.iterdir()):
        raise FileExistsError(f"merge output directory {output_dir} is not empty")
    configs = []
    for d in map(Path, input_dirs):
        path = d / STATE_DIR / RUN_CONFIG
        if not path.is_file():
            raise FileNotFoundError(f"{d} is not a CQA output directory (no {STATE_DIR}/{RUN_CONFIG})")
        configs.append(json.loads(path.read_text()))
    first = configs[0]
    for d, config in zip(input_dirs, configs, strict=True):
        changed = [k for k in IDENTITY_KEYS + ("units",) if config.get(k) != first.get(k)]
        if changed:
            raise ValueError(f"{d} was made with different options ({', '.join(changed)}) than {input_dirs[0]}")
    sources: dict[str, Path] = {}
    for d in map(Path, input_dirs):
        for name in _read_journal(d):
            if name in sources:
                raise ValueError(f"{name} is in both {sources[name]} and {d}: overlapping shards")
            sources[name] = d
    missing = [name for name in first["units"] if name not in sources]
    if missing:
        raise ValueError(f"merge is incomplete: {len(missing)} unit(s) missing, e.g. {missing[:3]}")
    (output_dir / "data").mkdir(parents=True, exist_ok=True)
    (output_dir / STATE_DIR).mkdir(exist_ok=True)
    merged = {**first, "num_shards": 1, "shard_index": 0, "merged_from": [str(Path(d).resolve()) for d in input_dirs]}
    _write_json_atomic(output_dir / STATE_DIR / RUN_CONFIG, merged)
    for name in first["units"]:
        tmp = output_dir / f"{name}.tmp"
        shutil.copyfile(sources[name] / name, tmp)
        os.replace(tmp, output_dir / name)
        _append_journal(output_dir, {"file": name, "merged_from": str(sources[name])})
    finalize_output(output_dir)
    return {"output_dir": str(output_dir), **output_stats(output_dir)}


def push_to_hub(output_dir: str | os.PathLike, repo_id: str, private: bool = False, token: str | None = None) -> str:
    """Upload a complete output folder as a Hub dataset repo (token from the env or `hf auth login`)."""
    from huggingface_hub import HfApi

    output_dir = Path(output_dir)
    if not (output_dir / "README.md").is_file():
        raise ValueError(f"{output_dir} is not a complete captioned dataset (no README.md); finish or merge it first")
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    commit = api.upload_folder(
        folder_path=str(output_dir),
        repo_id=repo_id,
        repo_type="dataset",
        ignore_patterns=[f"{STATE_DIR}/*", ".*", "plots/*"],  # run state and preview PNGs stay local
    )
    return str(commit)


__all__ = [
    "GenerationOptions",
    "WorkUnit",
    "generate_captions",
    "merge_outputs",
    "output_features",
    "plan_units",
    "push_to_hub",
    "shard_units",
]
