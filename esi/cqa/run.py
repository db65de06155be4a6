"""A prepared ECG dataset -> a captioned dataset (Parquet shards + dataset card), resumable and shardable.

See `esi.cqa.run_state` for how work is cut into units and `esi.run_folder` for how they are committed.
`generate_captions` runs (or resumes) this job's share of the units; `merge_outputs` gathers the shares of a
scale-out run; `push_captions` uploads a finished folder.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import closing
from pathlib import Path

import datasets
import torch
from datasets import load_from_disk
from tqdm.auto import tqdm

from esi.cqa.captioner import DEFAULT_PTBXL_LICENSE, Captioner
from esi.cqa.dataset_card import write_dataset_card
from esi.cqa.measurements import EcgMeasurements, MeasurePool
from esi.cqa.options import IDENTITY_KEYS, GenerationOptions
from esi.cqa.provenance import dataset_sources, licence_file_text
from esi.cqa.run_state import STATE_DIR, WorkUnit, caption_folder, plan_units, shard_units
from esi.cqa.schema import FAITHFULNESS_OUTCOMES, output_features
from esi.data.options import default_num_proc
from esi.hub import push_folder
from esi.run_folder import RunFolder

logger = logging.getLogger(__name__)


def _dataset_identity(dataset_dict: datasets.DatasetDict, splits: Sequence[str]) -> dict:
    return {s: {"fingerprint": dataset_dict[s]._fingerprint, "num_rows": dataset_dict[s].num_rows} for s in splits}


def generate_captions(
    dataset_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    options: GenerationOptions | None = None,
    **overrides,
) -> dict:
    """Caption a prepared dataset into ``output_dir``; ``overrides`` replace fields of ``options``.

    Returns a summary: rows written by this call, records/s, faithfulness counts, and whether the
    output holds every unit (then it also has a dataset card and loads with ``load_dataset``).
    """
    opts = dataclasses.replace(options or GenerationOptions(), **overrides)
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

    config = {k: v for k, v in dataclasses.asdict(opts).items() if k not in ("resume", "num_workers", "vllm_python")}
    config |= {"dataset": _dataset_identity(dataset_dict, splits), "splits": splits}
    config["units"] = [u.filename for u in all_units]
    config["dataset_dir"] = str(dataset_dir.resolve())
    folder = caption_folder(output_dir)
    # A resumed job must cut and write its units as the first one did; its own shard_index must match too.
    with folder.run(config, opts.resume, compare=IDENTITY_KEYS + ("shard_index",), expected=config["units"]) as done:
        todo = [u for u in my_units if u.filename not in done]
        started = time.perf_counter()
        with closing(_captioned_units(dataset_dir, dataset_dict, splits, todo, my_units, opts)) as captioned:
            folder.commit_all(captioned)
        elapsed = time.perf_counter() - started if todo else 0.0
        complete = finalize_output(folder, config)
    written = sum(done[u.filename]["rows"] for u in todo)
    counts = sum((Counter(done[u.filename]["faithfulness"]) for u in todo), Counter())
    return {
        "output_dir": str(output_dir),
        "rows_written": written,
        "seconds": elapsed,
        "records_per_second": written / elapsed if elapsed > 0 else 0.0,
        "faithfulness": dict(counts),
        "complete": complete,
    }


def _captioned_units(
    dataset_dir: Path,
    dataset_dict: datasets.DatasetDict,
    splits: Sequence[str],
    todo: Sequence[WorkUnit],
    my_units: Sequence[WorkUnit],
    opts: GenerationOptions,
) -> Iterator[tuple[str, dict, dict]]:
    """`(unit, {file: write}, journal entry)` for each unit of `todo`, measuring the next unit in the pool while the
    current one is captioned (`RunFolder.commit_all` writes and commits them)."""
    if not todo:
        return
    total = sum(u.stop - u.start for u in my_units)
    measurer, threads = MeasurePool(opts.num_workers), torch.get_num_threads()
    captioner: Captioner | None = None
    bar = tqdm(total=total, initial=total - sum(u.stop - u.start for u in todo), unit="rec", desc="captions")
    try:
        tables = {s: dataset_dict[s].with_format("numpy", columns=["signal"], output_all_columns=True) for s in splits}

        def load(unit: WorkUnit) -> tuple[dict, Iterator[EcgMeasurements]]:
            rows = tables[unit.split][unit.start : unit.stop]
            return rows, measurer.map(list(rows["signal"]), rows["sampling_rate"], rows["lead_names"], rows["ecg_id"])

        # The query encoder shares the cores with the measuring workers (and whatever else runs). Torch's threads
        # of one op wait for each other, so one that loses its core stalls the rest (2 threads took 2.1x the time of
        # 1 on 2 busy cores); one thread per op and whole batches in parallel threads use the cores that are free.
        torch.set_num_threads(1)
        pending = load(todo[0])
        # Built after the first unit went to the pool: it loads the encoder and embeds the passages meanwhile.
        captioner = Captioner(dataset_dir, opts, encode_threads=default_num_proc())
        for position, unit in enumerate(todo):
            rows, measured = pending
            if position + 1 < len(todo):
                pending = load(todo[position + 1])
            if unit.stop > unit.start:
                out_rows = captioner.rows(unit.split, rows, list(measured))
            else:  # a split with no records (a small source's folds) still gets its (empty) output split
                logger.info(
                    "split %r of %s has no records: its output file is empty and the dataset card leaves the split "
                    "out (load_dataset cannot load a split without rows)",
                    unit.split,
                    dataset_dir,
                )
                out_rows = []
            outcomes = Counter(r["faithfulness"] for r in out_rows)
            entry = {"split": unit.split, "index": unit.index, "rows": len(out_rows), "faithfulness": dict(outcomes)}
            yield unit.filename, {unit.filename: _output_table(out_rows).to_parquet}, entry
            bar.update(len(out_rows))
    finally:
        bar.close()
        measurer.close()
        torch.set_num_threads(threads)
        if captioner is not None:
            captioner.close()


def _output_table(rows: list[dict]) -> datasets.Dataset:
    """Output rows as a Dataset of the fixed schema (also when there are none: from_list cannot type those)."""
    features = output_features()
    return datasets.Dataset.from_dict({name: [r[name] for r in rows] for name in features}, features=features)


def output_stats(output_dir: Path, dataset_dir: str | os.PathLike | None = None) -> dict:
    """Rows, bytes (in memory, as `datasets` counts a split's `num_bytes`, and as Parquet files) per split and
    faithfulness outcomes, read back from the committed Parquet files; with `dataset_dir` (the prepared dataset
    captioned), also the sources of the captioned records (for the card's licence)."""
    import pyarrow.parquet as pq

    per_split: Counter[str] = Counter()
    num_bytes: Counter[str] = Counter()
    file_bytes: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    ecg_ids: list[int] = []
    for path in sorted((output_dir / "data").glob("*.parquet")):
        table = pq.read_table(path)
        splits = table.column("split").to_pylist()
        per_split.update(splits)
        if splits:  # a shard holds one split (`{split}-NNNNN-of-NNNNN.parquet`)
            num_bytes[splits[0]] += table.nbytes
            file_bytes[splits[0]] += path.stat().st_size
        outcomes.update(table.column("faithfulness").to_pylist())
        ecg_ids += table.column("ecg_id").to_pylist()
    stats = {
        "rows_per_split": dict(per_split),
        "bytes_per_split": dict(num_bytes),
        "parquet_bytes_per_split": dict(file_bytes),
        "faithfulness": {k: outcomes.get(k, 0) for k in FAITHFULNESS_OUTCOMES},
    }
    if dataset_dir is not None:
        stats["sources"] = dataset_sources(dataset_dir, ecg_ids)
    return stats


def finalize_output(folder: RunFolder, config: dict) -> bool:
    """Write the dataset card and licence once every unit is present and intact; returns whether it is complete.

    `folder` is held for the run with options `config` (`RunFolder.run`), so its journal is the run's.
    """
    output_dir = folder.root
    if any(name not in folder.done for name in config["units"]):
        return False
    stats = output_stats(output_dir, config["dataset_dir"])
    if set(stats["sources"]) == {"ptb-xl"}:
        license_src = Path(config.get("ptbxl_license") or DEFAULT_PTBXL_LICENSE)
        dataset_license = Path(config["dataset_dir"]) / "LICENSE.txt"
        if not config.get("ptbxl_license") and dataset_license.is_file():
            license_src = dataset_license
        shutil.copyfile(license_src, output_dir / "LICENSE.txt")
    else:  # PTB-XL's licence text would misstate other sources' terms
        (output_dir / "LICENSE.txt").write_text(licence_file_text(stats["sources"]))
    write_dataset_card(output_dir, config, stats)
    return True


def merge_outputs(input_dirs: Sequence[str | os.PathLike], output_dir: str | os.PathLike) -> dict:
    """Join the outputs of scale-out jobs (same options, different shard indices) into one dataset."""
    output_dir = Path(output_dir)
    if output_dir.exists() and any(output_dir.iterdir()):
        raise FileExistsError(f"merge output directory {output_dir} is not empty")
    shards = [caption_folder(d) for d in input_dirs]
    configs = [shard.read_config() for shard in shards]
    first = configs[0]
    for d, config in zip(input_dirs, configs, strict=True):
        changed = [k for k in IDENTITY_KEYS + ("units",) if config.get(k) != first.get(k)]
        if changed:
            raise ValueError(f"{d} was made with different options ({', '.join(changed)}) than {input_dirs[0]}")
    sources: dict[str, Path] = {}
    for shard in shards:
        for name in shard.journal():
            if name in sources:
                raise ValueError(f"{name} is in both {sources[name]} and {shard.root}: overlapping shards")
            sources[name] = shard.root
    missing = [name for name in first["units"] if name not in sources]
    if missing:
        raise ValueError(f"merge is incomplete: {len(missing)} unit(s) missing or damaged, e.g. {missing[:3]}")
    merged = {**first, "num_shards": 1, "shard_index": 0, "merged_from": [str(Path(d).resolve()) for d in input_dirs]}
    folder = caption_folder(output_dir)
    with folder.run(merged, resume=False, expected=merged["units"]):
        copies = (
            (n, {n: functools.partial(shutil.copyfile, sources[n] / n)}, {"merged_from": str(sources[n])})
            for n in first["units"]
        )
        folder.commit_all(copies)
        finalize_output(folder, merged)
    return {"output_dir": str(output_dir), **output_stats(output_dir)}


def push_captions(output_dir: str | os.PathLike, repo_id: str, private: bool = False, token: str | None = None) -> str:
    """Upload a complete output folder as a Hub dataset repo (token from the env or `hf auth login`)."""
    output_dir = Path(output_dir)
    if not (output_dir / "README.md").is_file():
        raise ValueError(f"{output_dir} is not a complete captioned dataset (no README.md); finish or merge it first")
    # Run state and preview PNGs stay local.
    return push_folder(
        output_dir, repo_id, "dataset", private, token, ignore_patterns=[f"{STATE_DIR}/*", ".*", "plots/*"]
    )
