"""The ESI claim benchmark (issue 15): ablations, baselines, seeds and paired statistics, rerunnable.

    python -m benchmarks.esi_claim.pack   --profile cpu     # CPU side: raw PTB-XL -> compact pack
    python -m benchmarks.esi_claim.run    --profile cpu     # the grid (resumable), one JSON per run
    python -m benchmarks.esi_claim.report                   # benchmarks/reports/esi_claim.md from the JSONs

`run` needs only torch, transformers, numpy and scikit-learn (it runs on a bare accelerator machine).
"""
