"""Caption a prepared ECG dataset with the Cardio Query Assistant (CQA).

Examples:

    # deterministic template captions for the embedded sample (no model needed)
    python cqa_generate.py --dataset outputs/ptbxl-100 --output-dir outputs/captions --backend template

    # an LLM through vLLM on 4 GPUs, split across two nodes, then merged
    python cqa_generate.py --dataset D --output-dir out0 --backend vllm --model /models/llm \\
        --tensor-parallel-size 4 --num-shards 2 --shard-index 0
    python cqa_generate.py --dataset D --output-dir out1 ... --num-shards 2 --shard-index 1
    python cqa_generate.py --merge out0 out1 --output-dir outputs/captions

    # continue an interrupted run (same options plus --resume)
    python cqa_generate.py --dataset D --output-dir outputs/captions --backend template --resume

The output folder holds Parquet shards (`data/{split}-NNNNN-of-NNNNN.parquet`), a dataset card
(README.md) and PTB-XL's LICENSE.txt, and loads with `datasets.load_dataset(OUTPUT_DIR)`.
Research software: the captions are machine-generated and not diagnoses.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from esi.cqa.backends import BACKENDS, VLLM_PYTHON_ENV
from esi.cqa.pipeline import GenerationOptions, generate_captions, merge_outputs, push_to_hub

DEFAULTS = GenerationOptions()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    io = parser.add_argument_group("input and output")
    io.add_argument("--dataset", help="prepared dataset folder (dataset_scripts/prepare_ptbxl.py output)")
    io.add_argument("--output-dir", required=True, help="output folder; must be empty unless --resume")
    io.add_argument("--splits", nargs="+", help="splits to caption (default: all)")
    io.add_argument("--num-samples", type=int, help="caption only the first N records of each split")
    io.add_argument(
        "--records-per-file", type=int, default=DEFAULTS.records_per_file, help="records per Parquet shard"
    )
    io.add_argument("--resume", action="store_true", help="continue an interrupted run in --output-dir")
    io.add_argument(
        "--merge",
        nargs="+",
        metavar="RUN_DIR",
        help="instead of generating, join the outputs of --num-shards jobs into --output-dir",
    )
    io.add_argument("--push-to-hub", metavar="REPO_ID", help="upload the finished dataset to this Hub dataset repo")
    io.add_argument("--private", action="store_true", help="create the Hub repo as private")
    io.add_argument(
        "--plot",
        type=int,
        metavar="N",
        help="also draw the first N captioned ECGs on ECG paper with their captions into OUTPUT_DIR/plots",
    )

    gen = parser.add_argument_group("generation")
    gen.add_argument("--backend", choices=BACKENDS, default=DEFAULTS.backend)
    gen.add_argument("--model", help="local model folder for the transformers and vllm backends")
    gen.add_argument("--model-id", help="model id recorded in the rows (default: the model folder's name)")
    gen.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size, help="prompts per backend call")
    gen.add_argument("--max-new-tokens", type=int, default=DEFAULTS.max_new_tokens)
    gen.add_argument("--temperature", type=float, default=DEFAULTS.temperature, help="0 for greedy decoding")
    gen.add_argument("--top-p", type=float, default=DEFAULTS.top_p)
    gen.add_argument(
        "--max-retries", type=int, default=DEFAULTS.max_retries, help="regenerations per unfaithful caption"
    )
    gen.add_argument("--tensor-parallel-size", type=int, default=DEFAULTS.tensor_parallel_size, help="vllm only")
    gen.add_argument("--max-model-len", type=int, default=DEFAULTS.max_model_len, help="vllm only")
    gen.add_argument(
        "--vllm-python",
        help=f"interpreter with vllm for the worker subprocess (default: ${VLLM_PYTHON_ENV}, else .venv-vllm)",
    )
    gen.add_argument("--retrieval-k", type=int, default=DEFAULTS.retrieval_k, help="knowledge passages per record")
    gen.add_argument(
        "--encoder-path", default=DEFAULTS.encoder_path, help="dense retrieval encoder folder, or 'default'"
    )
    gen.add_argument(
        "--scp-statements", help="PTB-XL scp_statements.csv (default: next to the dataset, else the sample's)"
    )

    scale = parser.add_argument_group("scale-out")
    scale.add_argument("--num-shards", type=int, default=1, help="split the work across this many jobs")
    scale.add_argument("--shard-index", type=int, default=0, help="which job this is (0-based)")
    scale.add_argument(
        "--num-workers", type=int, default=DEFAULTS.num_workers, help="processes measuring the signals"
    )
    args = parser.parse_args(argv)
    if not args.merge and not args.dataset:
        parser.error("--dataset is required unless --merge is given")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.merge:
        summary = merge_outputs(args.merge, args.output_dir)
        complete = True
    else:
        summary = generate_captions(
            args.dataset,
            args.output_dir,
            backend=args.backend,
            model=args.model,
            model_id=args.model_id,
            splits=args.splits,
            num_samples=args.num_samples,
            records_per_file=args.records_per_file,
            batch_size=args.batch_size,
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            top_p=args.top_p,
            tensor_parallel_size=args.tensor_parallel_size,
            max_model_len=args.max_model_len,
            vllm_python=args.vllm_python,
            max_retries=args.max_retries,
            retrieval_k=args.retrieval_k,
            encoder_path=None if args.encoder_path in ("", "none") else args.encoder_path,
            num_shards=args.num_shards,
            shard_index=args.shard_index,
            num_workers=args.num_workers,
            resume=args.resume,
            scp_statements=args.scp_statements,
        )
        complete = summary["complete"]
    print(json.dumps(summary, indent=2))
    if args.plot:
        if not complete or not args.dataset:
            raise SystemExit("--plot needs a finished (or merged) output and --dataset for the signals")
        from esi.plot.captions import plot_records_with_captions

        paths = plot_records_with_captions(args.output_dir, args.dataset, args.plot, Path(args.output_dir) / "plots")
        print(f"wrote {len(paths)} plot(s) to {Path(args.output_dir) / 'plots'}")
    if args.push_to_hub:
        if not complete:
            raise SystemExit("not pushing: this output is one shard of a sharded run; merge the shards first")
        print(f"pushed to {args.push_to_hub}: {push_to_hub(args.output_dir, args.push_to_hub, args.private)}")
    return summary


if __name__ == "__main__":
    main()
