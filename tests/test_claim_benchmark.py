"""The claim benchmark's machinery: statistics, compact pack, text variants, the grid runner and its report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from benchmarks.esi_claim.codec import decode, encode, limb_leads
from benchmarks.esi_claim.profiles import PROFILES
from benchmarks.esi_claim.texts import compose
from esi.checksum import sha256_file
from esi.eval.stats import bootstrap_interval, macro_auroc, paired_bootstrap, per_class_auroc
from esi.knowledge import load_knowledge_base

REPO_ROOT = Path(__file__).resolve().parents[1]
# The accelerator image has none of these: the runner must work without them.
BLOCKED = ("datasets", "wfdb", "neurokit2")
BLOCKING_RUNNER = (
    "import runpy, sys\n"
    f"for name in {BLOCKED!r}:\n"
    "    sys.modules[name] = None  # `import name` now raises ImportError, find_spec says absent\n"
    "sys.argv = ['benchmarks.esi_claim.run', *sys.argv[1:]]\n"
    "runpy.run_module('benchmarks.esi_claim.run', run_name='__main__')\n"
)


def test_rank_auroc_equals_scikit_learn_with_ties_and_single_class_columns():
    rng = np.random.default_rng(0)
    labels = rng.random((300, 6)) < 0.3
    scores = np.round(rng.random((300, 6)), 1)  # many ties
    labels[:, 5] = False
    ours = per_class_auroc(labels, scores)
    expected = [roc_auc_score(labels[:, k], scores[:, k]) for k in range(5)]
    np.testing.assert_allclose(ours[:5], expected, atol=1e-12)
    assert np.isnan(ours[5])


def test_paired_bootstrap_tells_a_real_difference_from_none():
    rng = np.random.default_rng(1)
    labels = (rng.random((400, 3)) < 0.4).astype(int)
    noise = rng.normal(size=(400, 3))
    good, bad = labels + 0.5 * noise, labels + 3.0 * noise
    better = paired_bootstrap(macro_auroc, labels, good, bad, samples=300, seed=0)
    assert better["shown"] and better["ci"][0] > 0 and better["difference"] > 0.1
    same = paired_bootstrap(macro_auroc, labels, [bad, bad], [bad], samples=300, seed=0)
    assert not same["shown"] and same["ci"] == [0.0, 0.0]
    # two systems of similar quality: the interval straddles 0
    other = labels + 3.0 * rng.normal(size=(400, 3))
    assert not paired_bootstrap(macro_auroc, labels, bad, other, samples=300, seed=0)["shown"]
    assert paired_bootstrap(macro_auroc, labels, good, bad, samples=50, seed=3) == paired_bootstrap(
        macro_auroc, labels, good, bad, samples=50, seed=3
    )
    with pytest.raises(ValueError, match="same records"):
        paired_bootstrap(macro_auroc, labels, good, bad[:-1], samples=10)


def test_bootstrap_interval_contains_the_observed_value():
    rng = np.random.default_rng(2)
    labels = (rng.random((300, 4)) < 0.3).astype(int)
    scores = labels + rng.normal(size=(300, 4))
    low, high = bootstrap_interval(macro_auroc, labels, scores, samples=300)
    assert low < macro_auroc(labels, scores) < high and high - low < 0.2


def test_codec_rebuilds_the_limb_leads_and_keeps_the_resolution():
    rng = np.random.default_rng(3)
    signals = rng.normal(0, 0.6, (4, 12, 250)).astype(np.float32)
    signals[:, 2:6] = limb_leads(signals[:, 0], signals[:, 1]).transpose(1, 0, 2)
    for quantum_uv in (1, 8):
        blob, clipped = encode(signals, quantum_uv)
        restored = decode(blob)
        assert clipped == 0 and restored.shape == signals.shape
        # rounding to the quantum, and at most 1.5 quanta on the derived limb leads
        assert np.abs(restored - signals).max() <= 1.5 * quantum_uv / 1000 + 1e-6
    assert len(encode(signals, 8)[0]) < len(encode(signals, 1)[0]) < signals.size * 2


def test_text_variants_order_content_and_leave_out_demographics():
    knowledge = {e.id: e for e in load_knowledge_base()}
    row = {
        "ecg_id": 7,
        "statement_descriptions": ["atrial fibrillation"],
        "heart_rate_bpm": 112.0,
        "rr_irregular": True,
        "qrs_duration_ms": float("nan"),
        "retrieved_passage_ids": ["scp:AFIB"],
    }
    full = compose(row, "full", knowledge)
    assert full.index("Findings") < full.index("Measurements") < full.index(knowledge["scp:AFIB"].title)
    assert "QRS" not in full  # not measured, so not stated
    assert compose(row, "statements", knowledge) == "Findings: atrial fibrillation."
    assert knowledge["scp:AFIB"].title not in compose(row, "no_knowledge", knowledge)
    assert "atrial" not in compose(row, "measurements", knowledge)
    for text in (compose(row, v, knowledge) for v in ("full", "statements", "measurements")):
        assert "male" not in text and "year" not in text
    with pytest.raises(ValueError, match="passage 'kb:none'"):
        compose({**row, "retrieved_passage_ids": ["kb:none"]}, "full", knowledge)


@pytest.fixture(scope="module")
def sample_pack(ptbxl_sample_dir, tmp_path_factory) -> Path:
    from benchmarks.esi_claim.pack import pack

    profile = replace(PROFILES["tiny"], pool_records=40, eval_records=None, caption_eval_records=6)
    return pack(profile, tmp_path_factory.mktemp("claim"), ptbxl_sample_dir, ptbxl_sample_dir, num_proc=1)


def run_grid(pack_dir: Path, results: Path, models: Path, arms: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-c", BLOCKING_RUNNER, "--profile", "tiny", "--pack", str(pack_dir),
         "--results-dir", str(results), "--models-dir", str(models), "--arms", arms, "--threads", "1"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip


@pytest.mark.slow
def test_grid_runs_without_datasets_resumes_and_feeds_the_report(sample_pack, tmp_path):
    meta = json.loads((sample_pack / "meta.json").read_text())
    assert meta["signal_quantum_uv"] == 8 and meta["text_embedding_dims"] == 16
    assert all(sha256_file(sample_pack / name) == digest for name, digest in meta["files"].items())
    results, models = tmp_path / "results" / "tiny", tmp_path / "models"
    arms = "esi_full,caption_only,ssl_two_views,random_init,supervised_scratch"
    first = run_grid(sample_pack, results, models, arms)
    assert first.returncode == 0, first.stderr[-4000:]

    runs = {p.stem: json.loads(p.read_text()) for p in results.glob("*.json")}
    profile = PROFILES["tiny"]
    probes_per_encoder = len(profile.tasks) * len(profile.fractions) * len(profile.probe_seeds)
    # esi_full has two pretraining seeds; the others one
    assert sum(r["kind"] == "probe" for r in runs.values()) == probes_per_encoder * 5
    assert {r["arm"] for r in runs.values() if r["kind"] == "zero_shot"} == {"esi_full"}
    assert {r["arm"] for r in runs.values() if r["kind"] == "captioning"} == {"esi_full", "caption_only"}
    assert sum(r["kind"] == "scratch" for r in runs.values()) == len(profile.tasks) * len(profile.probe_seeds)
    for run in runs.values():
        assert run["command"].startswith("python") and "--profile tiny" in run["command"]
        assert run["git_commit"] and run["config"]["name"] == "tiny" and run["smoke"] is True
        assert len(run["weights_sha256"]) == 64
    pretrain = runs["pretrain-esi_full-s1"]
    assert pretrain["weights_sha256"] == sha256_file(models / "esi_full-s1" / "model.safetensors")
    assert runs["probe-esi_full-s1-rhythm-f1-p0"]["weights_sha256"] == pretrain["weights_sha256"]
    assert runs["pretrain-esi_full-s0"]["weights_sha256"] != pretrain["weights_sha256"]
    probe = runs["probe-random_init-s0-superdiagnostic-f0.1-p1"]
    with np.load(results / probe["scores_file"]) as saved:
        recomputed = macro_auroc(saved["labels"], saved["scores"].astype(np.float64))
    assert abs(recomputed - probe["metrics"]["macro_auroc"]) < 2e-3  # float16 scores on disk
    subject = runs["subject_id-random_init-s0"]
    assert subject["probes"] > 0 and 0 <= subject["metrics"]["top1_accuracy"] <= 1

    before = {p.name: p.stat().st_mtime_ns for p in results.glob("*.json")}
    again = run_grid(sample_pack, results, models, arms)
    assert again.returncode == 0, again.stderr[-4000:]
    assert "'written': 0" in again.stderr + again.stdout
    assert before == {p.name: p.stat().st_mtime_ns for p in results.glob("*.json")}

    from benchmarks.esi_claim.report import main as report

    output = report(["--results-dir", str(tmp_path / "results"), "--output", str(tmp_path / "esi_claim.md"),
                     "--bootstrap-samples", "100"])  # fmt: skip
    text = output.read_text()
    assert "SMOKE RUN" in text and "no evidence" in text
    assert "| met |" not in text and "no verdict (smoke run)" in text
    assert f"`{pretrain['weights_sha256'][:16]}`" in text
    assert "| esi_full - random_init |" in text and "| esi_full - supervised_scratch |" in text
    assert (tmp_path / "esi_claim_tiny_label_efficiency.png").stat().st_size > 0

    summary = report(["--results-dir", str(tmp_path / "results"), "--model-summary", pretrain["weights_sha256"],
                      "--summary-output", str(tmp_path / "summary.json")])  # fmt: skip
    entries = json.loads(summary.read_text())["results"]
    assert entries and {e["weights_sha256"] for e in entries} == {pretrain["weights_sha256"]}


@pytest.mark.slow
def test_pretraining_batches_do_not_depend_on_loader_workers_and_the_pool_head_starts_at_the_prior(sample_pack):
    import torch

    from benchmarks.esi_claim.run import ARMS_BY_NAME, Pack, PretrainingBatches, pretrain, state_sha256

    pack = Pack(sample_pack)
    # Rows are drawn up front and every augmentation is seeded by (seed, step, view, row): worker processes
    # (the gpu profile's prefetching) must give the same batches, hence the same weights, as in-line preparation.
    batches = PretrainingBatches(pack.pool_signals, pack.meta["sampling_rate"], 3, 7, 16, views=2)
    assert all(len(set(rows)) == 16 for rows in batches.rows)  # no record twice in one batch
    weights = []
    for workers in (0, 2):
        profile = replace(PROFILES["tiny"], steps=3, loader_workers=workers)
        model, _ = pretrain(ARMS_BY_NAME["ssl_two_views"], profile, pack, 0, torch.device("cpu"))
        weights.append(state_sha256(model.state_dict()))
    assert weights[0] == weights[1]

    # A zero-bias head starts at BCE log(2) = 0.693 and drove the first grid's encoders to one embedding;
    # started at the statements' prior log odds, the first loss is the prior's entropy, far below.
    _, summary = pretrain(
        ARMS_BY_NAME["supervised_pool"], replace(PROFILES["tiny"], steps=2), pack, 0, torch.device("cpu")
    )
    prior = pack.pool_statements().mean(0).clip(1e-3, 1 - 1e-3)
    entropy = float(np.mean(-(prior * np.log(prior) + (1 - prior) * np.log(1 - prior))))
    assert summary["first_loss"] < 0.5 and abs(summary["first_loss"] - entropy) < 0.1


def test_embedding_spread_tells_a_collapsed_encoder_from_a_working_one():
    from benchmarks.esi_claim.run import embedding_spread

    rng = np.random.default_rng(0)
    working = embedding_spread(rng.normal(size=(200, 32)))
    collapsed = embedding_spread(np.ones((200, 32)) + 1e-4 * rng.normal(size=(200, 32)) * np.r_[1.0, np.zeros(31)])
    assert working["effective_rank"] > 20 and working["mean_dimension_std"] > 0.5
    assert collapsed["effective_rank"] < 1.5 and collapsed["mean_dimension_std"] < 1e-4


def test_report_intervals_carry_the_spread_between_pretraining_seeds():
    from benchmarks.esi_claim.report import Section

    rng = np.random.default_rng(2)
    labels = (rng.random((300, 4)) < 0.3).astype(int)
    ids = np.arange(300)

    def run(arm: str, pretrain_seed: int, probe_seed: int, noise: float) -> dict:
        scores = labels + noise * rng.normal(size=labels.shape)
        return {
            "run_id": f"probe-{arm}-s{pretrain_seed}-p{probe_seed}", "arm": arm, "kind": "probe", "config": {},
            "pretrain_seed": pretrain_seed, "probe_seed": probe_seed,
            "_scores": {"test_ecg_ids": ids, "labels": labels, "scores": scores},
        }  # fmt: skip

    # three pretraining runs of very different quality, two probe seeds each
    uneven = [run("a", s, p, noise) for s, noise in enumerate((0.4, 1.0, 2.5)) for p in (0, 1)]
    section = Section("synthetic", uneven, samples=400)
    seeds_only = section.seed_draws(uneven)
    records_only = np.mean([section.draws(r) for r in uneven], 0)
    assert np.std(seeds_only) > 2 * np.std(records_only)
    assert section.seed_draws(uneven).tolist() == seeds_only.tolist()  # the same report on every run
    single = [r for r in uneven if r["pretrain_seed"] == 0]
    assert np.allclose(section.seed_draws(single), np.mean([section.draws(r) for r in single], 0))
