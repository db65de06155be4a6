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
from tests.helpers import REPO_ROOT


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


def test_embedding_spread_tells_a_collapsed_encoder_from_a_working_one():
    from benchmarks.esi_claim.run import embedding_spread

    rng = np.random.default_rng(0)
    working = embedding_spread(rng.normal(size=(200, 32)))
    collapsed = embedding_spread(np.ones((200, 32)) + 1e-4 * rng.normal(size=(200, 32)) * np.r_[1.0, np.zeros(31)])
    assert working["effective_rank"] > 20 and working["mean_dimension_std"] > 0.5
    assert collapsed["effective_rank"] < 1.5 and collapsed["mean_dimension_std"] < 1e-4


@pytest.mark.slow
def test_crossfit_predicts_each_fold_with_a_probe_that_never_saw_it():
    from benchmarks.esi_claim.crossfit import crossfit_probe, validation_fold

    assert validation_fold(list(range(1, 11)), 10) == 9 and validation_fold(list(range(1, 11)), 1) == 10
    rng = np.random.default_rng(0)
    folds = np.repeat(np.arange(1, 11), 40)
    labels = (rng.random((400, 2)) < 0.4).astype(np.int64)
    labels[labels.sum(1) == 0, 0] = 1
    signal = np.where(labels == 1, 1.0, -1.0)
    # In fold 3 the features say the opposite of its labels: a probe that trained (or stopped early) on fold 3
    # would score it above chance; trained on the other folds only, it must score it far below.
    signal[folds == 3] *= -1
    features = np.concatenate([signal + 0.3 * rng.normal(size=signal.shape), rng.normal(size=(400, 2))], 1)
    result = crossfit_probe(
        features.astype(np.float32), labels, ["a", "b"], folds, np.arange(400), 1.0, 0, epochs=60, patience=10
    )
    assert result["records"] == 400 and result["_scores"]["scores"].dtype == np.float32
    assert result["folds"][3]["macro_auroc"] < 0.35 and result["folds"][5]["macro_auroc"] > 0.9
    assert all(info["validation_fold"] != k for k, info in result["folds"].items())
    assert all(info["train_records"] == 320 for info in result["folds"].values())  # 8 folds of 40
    assert result["folds"][10]["validation_fold"] == 9  # fold 10's probe is the standard PTB-XL split


def test_paired_difference_gives_each_verdict_and_pairing_cancels_seed_effects():
    from benchmarks.esi_claim.paired import ArmScores, holm, paired_difference

    rng = np.random.default_rng(0)
    labels = (rng.random((600, 3)) < 0.3).astype(int)
    base = labels + rng.normal(size=labels.shape)
    # Each pretraining seed shifts both arms alike (a shared init and shared batches): pairing removes it.
    seed_effect = {s: rng.normal(scale=1.0, size=labels.shape) for s in range(5)}

    def arm(extra_noise: float, offset: float = 0.0) -> ArmScores:
        return ArmScores(
            labels,
            {
                s: [base + offset * labels + seed_effect[s] + extra_noise * rng.normal(size=labels.shape)]
                for s in range(5)
            },
        )

    reference = arm(0.05)
    same = paired_difference(arm(0.05), reference, 400, 0, 0.02)
    assert same["verdict"] == "equivalent within 0.02" and same["se"] < 0.005
    assert same["mdd"] == pytest.approx(2.8016 * same["se"], rel=1e-3)
    better = paired_difference(arm(0.05, offset=0.5), reference, 400, 0, 0.02)
    assert better["verdict"] == "better" and better["ci95"][0] > 0
    assert paired_difference(reference, arm(0.05, offset=0.5), 400, 0, 0.02)["verdict"] == "worse"
    few = np.zeros(600, dtype=bool)
    few[:40] = True
    noisy = paired_difference(arm(2.0), reference, 400, 0, 0.02, subset=few)
    assert noisy["verdict"] == "too noisy to say" and noisy["records"] == 40
    # Unpaired (the other arm's seeds shuffled), the shared seed effects no longer cancel.
    shuffled = ArmScores(labels, {s: reference.by_seed[(s + 1) % 5] for s in range(5)})
    assert paired_difference(arm(0.05), shuffled, 400, 0, 0.02)["se"] > 3 * same["se"]
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


@pytest.fixture(scope="module")
def sample_pack(ptbxl_sample_dir, tmp_path_factory) -> Path:
    from benchmarks.esi_claim.pack import pack

    profile = replace(PROFILES["tiny"], pool_records=40, eval_records=None, caption_eval_records=6)
    return pack(profile, tmp_path_factory.mktemp("claim"), ptbxl_sample_dir, ptbxl_sample_dir, num_proc=1)


@pytest.mark.slow
def test_one_positive_twins_differ_from_their_arm_only_in_same_text_positives(sample_pack, tmp_path):
    from benchmarks.esi_claim.pretraining import ARMS_BY_NAME, esi_train_args
    from benchmarks.esi_claim.run import Pack
    from esi.train.arguments import parse_args

    pack = Pack(sample_pack)

    def model_options(name: str) -> dict:
        args = esi_train_args(ARMS_BY_NAME[name], PROFILES["cpu"], pack, tmp_path, 0, 600, tmp_path / "out")
        return vars(parse_args([str(a) for a in args])[1])

    for arm in ("esi_full", "statements_only"):
        options, twin = model_options(arm), model_options(f"{arm}_one_positive")
        assert options["same_text_positives"] and not twin["same_text_positives"]
        assert {k: v for k, v in twin.items() if k != "same_text_positives"} == {
            k: v for k, v in options.items() if k != "same_text_positives"
        }


def test_grid_arms_are_esi_train_runs_paired_by_seed_and_feed_the_report(sample_pack, tmp_path):
    import torch
    from safetensors.torch import load_file

    from benchmarks.esi_claim.pretraining import initial_model
    from benchmarks.esi_claim.report import main as report
    from benchmarks.esi_claim.run import Pack
    from benchmarks.esi_claim.run import main as run_grid
    from esi.checksum import state_dict_sha256

    meta = json.loads((sample_pack / "meta.json").read_text())
    assert all(sha256_file(sample_pack / name) == digest for name, digest in meta["files"].items())
    results, work = tmp_path / "results" / "tiny", tmp_path / "work"
    common = ["--profile", "tiny", "--pack", str(sample_pack), "--results-dir", str(results), "--work-dir", str(work)]
    arms = "esi_full,statements_only,supervised_pool,random_init,statements_only_one_positive"
    summary = run_grid([*common, "--stage", "grid", "--steps", "3", "--arms", arms, "--threads", "1"])
    assert summary["written"] > 0
    runs = {p.stem: json.loads(p.read_text()) for p in results.glob("*.json")}
    assert all(r["protocol"] == "crossfit-paired-v2" for r in runs.values())

    # Pairing: at a seed, every arm (random_init included) starts from one ECG encoder; the trained arms saw
    # one sequence of batches; another seed gives another encoder.
    for seed in (0, 1):
        pretrains = [r for r in runs.values() if r["kind"] == "pretrain" and r["pretrain_seed"] == seed]
        assert len({r["training"]["initial_ecg_encoder_sha256"] for r in pretrains}) == 1
        trained = [r for r in pretrains if r["training"]["steps"]]
        assert len(trained) == 3 + (seed == 0) and len({r["training"]["batch_ecg_ids_sha256"] for r in trained}) == 1
    init0, init1 = (runs[f"pretrain-esi_full-n3-s{s}"]["training"]["initial_ecg_encoder_sha256"] for s in (0, 1))
    assert init0 != init1
    assert "same ECG encoder" in runs["probe-supervised_pool-n3-s1-rhythm-f0.1-p0"]["pairing"]

    # The grid's esi_full is the esi-train command it records: run that command, get the same weights.
    command = runs["pretrain-esi_full-n3-s0"]["training"]["esi_train_command"].split()
    assert command[0] == "esi-train"
    cli_dir = tmp_path / "cli"
    args = command[1:]
    args[args.index("--output-dir") + 1] = str(cli_dir)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(REPO_ROOT / "train.py"), *args], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    grid_model = work / "models" / "esi_full-n3-s0" / "model"
    grid_weights = load_file(str(grid_model / "model.safetensors"))
    overlap = json.loads((grid_model / "training_summary.json").read_text())["evaluation_overlap"]
    pack = Pack(sample_pack)  # the smoke pack draws pool and evaluation records from one sample: they overlap
    shared = {r["ecg_id"] for r in pack.pool} & set(pack.ecg_ids.tolist())
    assert overlap["checked"] and overlap["shared_records"] == len(shared) > 0
    cli_weights = load_file(str(cli_dir / "model" / "model.safetensors"))
    assert grid_weights.keys() == cli_weights.keys()
    for name in grid_weights:
        torch.testing.assert_close(cli_weights[name], grid_weights[name], rtol=0, atol=0, msg=name)

    # random_init is rebuilt from its seed alone.
    rebuilt = initial_model(PROFILES["tiny"], pack, work / "inputs", 0)
    assert state_dict_sha256(rebuilt.state_dict()) == runs["pretrain-random_init-s0"]["weights_sha256"]

    # Cross-fitted probes score every labelled record; scores are stored in float32 and rescore exactly.
    probe = runs["probe-esi_full-n3-s0-superdiagnostic-f0.1-p0"]
    with np.load(results / probe["scores_file"]) as saved:
        assert saved["scores"].dtype == np.float32
        assert macro_auroc(saved["labels"], saved["scores"]) == pytest.approx(probe["metrics"]["macro_auroc"], abs=1e-9)
        assert len(saved["rows"]) == probe["records"] == int((pack.labels("superdiagnostic").sum(1) > 0).sum())
    assert set(probe["folds"]) == {str(k) for k in np.unique(pack.folds)}

    before = {p.name: p.stat().st_mtime_ns for p in results.glob("*.json")}
    again = run_grid([*common, "--stage", "grid", "--steps", "3", "--arms", arms, "--threads", "1"])
    assert again["written"] == 0 and before == {p.name: p.stat().st_mtime_ns for p in results.glob("*.json")}

    output = report(["--results-dir", str(tmp_path / "results"), "--output", str(tmp_path / "esi_claim.md"),
                     "--bootstrap-samples", "100"])  # fmt: skip
    text = output.read_text()
    assert "SMOKE RUN" in text and "no verdict (smoke run)" in text and "| esi_full - statements_only |" in text
    assert "1 initial ECG encoder digest(s)" in text and "SE fold 10 only" in text
    assert "| statements_only - statements_only_one_positive |" in text
    summary = report(["--results-dir", str(tmp_path / "results"), "--model-summary", probe["weights_sha256"],
                      "--summary-output", str(tmp_path / "summary.json")])  # fmt: skip
    entries = json.loads(summary.read_text())["results"]
    assert entries and {e["weights_sha256"] for e in entries} == {probe["weights_sha256"]}


def test_low_rank_note_names_the_arms_below_8_at_the_grid_steps_with_their_trend_and_target():
    from benchmarks.esi_claim.report import Section, low_rank_note

    def pretrain(arm: str, steps: int, seed: int, rank: float) -> dict:
        return {"kind": "pretrain", "arm": arm, "pretrain_steps": steps, "pretrain_seed": seed,
                "embedding": {"effective_rank": rank}, "task": None}  # fmt: skip

    checks = {"kind": "data_checks", "text_variants": {"statements": {
        "distinct_texts": 922, "most_common_text_share": 0.367, "text_embedding_effective_rank": 12.0}}}  # fmt: skip
    runs = [pretrain("esi_full", 150, 0, 2.5), pretrain("esi_full", 600, 0, 9.0), pretrain("esi_full", 600, 1, 10.0),
            pretrain("statements_only", 150, 0, 3.0), pretrain("statements_only", 600, 0, 5.0),
            pretrain("statements_only", 600, 1, 7.0), checks]  # fmt: skip
    note = low_rank_note(Section("cpu", runs, samples=10))
    assert "at 600 steps" in note and "esi_full" not in note
    assert "- statements_only: 3.0 at 150 steps, 6.0 at 600 steps (rising with every step count run)" in note
    assert "922 distinct" in note
    runs[4]["embedding"]["effective_rank"] = 9.0
    assert "Every arm's evaluation embedding at 600 steps" in low_rank_note(Section("cpu", runs, samples=10))


def test_curve_flattening_compares_the_grid_step_count_with_the_longest_run():
    from types import SimpleNamespace

    from benchmarks.esi_claim.report import curve_flattening

    section = SimpleNamespace(grid_steps=600, tasks=["superdiagnostic", "rhythm"])
    series = {
        "esi_full": [(150, [0.80, 0.60], 2.0), (600, [0.84, 0.70], 9.0), (1200, [0.845, 0.705], 11.0)],
        "statements_only": [(150, [0.79, 0.60], 3.0), (600, [0.83, 0.70], 6.0), (1200, [0.85, 0.70], 7.0)],
        "supervised_pool": [(600, [0.83, 0.71], 7.0)],
    }
    text = curve_flattening(section, series, 0.1)
    assert "esi_full from 600 to 1200 steps" in text and "superdiagnostic +0.005, rhythm +0.005; every task" in text
    assert "statements_only from 600 to 1200 steps" in text and "superdiagnostic +0.020" in text
    assert text.count(": flat.") == 1 and "not flat" in text and "supervised_pool" not in text


def test_one_seed_note_measures_the_seed_spread_a_one_seed_interval_leaves_out():
    from types import SimpleNamespace

    from benchmarks.esi_claim.report import one_seed_note

    def compare(a: str, b: str, task: str, fraction: float) -> dict:
        spread = {"statements_only": [0.01, -0.01, 0.0], "supervised_pool": [0.03, -0.03, 0.0]}[b]
        return {"seeds": [0, 1, 2], "per_seed_difference": spread}

    text = one_seed_note(SimpleNamespace(tasks=["superdiagnostic"], compare=compare))
    assert "standard deviation over pretraining seeds of 0.020 (median of 4 cells; largest 0.030)" in text
    single = {"seeds": [0], "per_seed_difference": [0.1]}
    one_seed = SimpleNamespace(tasks=["superdiagnostic"], compare=lambda *_: single)
    assert "evaluation records only, not the pretraining seeds" in one_seed_note(one_seed)
