"""Label-fraction sampling: whole patients, stratified over labels, seeded and deterministic."""

from __future__ import annotations

import numpy as np
import pytest

from esi.eval.sampling import patient_label_matrix, sample_label_fraction


@pytest.fixture(scope="module")
def pool():
    rng = np.random.default_rng(1)
    patients = rng.integers(0, 1500, 2000)  # many patients with several records
    labels = rng.random((2000, 6)) < [0.4, 0.3, 0.2, 0.1, 0.05, 0.004]
    return patients, labels


@pytest.mark.parametrize("fraction", [0.01, 0.1, 0.5])
def test_takes_whole_patients_close_to_the_fraction(pool, fraction):
    patients, labels = pool
    rows = sample_label_fraction(patients, labels, fraction, seed=0)
    chosen = np.unique(patients[rows])
    # every record of a chosen patient is in, none of the others
    np.testing.assert_array_equal(rows, np.flatnonzero(np.isin(patients, chosen)))
    share = len(chosen) / len(np.unique(patients))
    assert abs(share - fraction) <= max(0.01, 0.1 * fraction) + 6 / len(np.unique(patients))
    # at least one positive per class, even the rarest at 1%
    assert labels[rows].any(axis=0).all()


def test_stratified_prevalence(pool):
    patients, labels = pool
    _, union = patient_label_matrix(patients, labels)
    rows = sample_label_fraction(patients, labels, 0.1, seed=0)
    _, chosen_union = patient_label_matrix(patients[rows], labels[rows])
    np.testing.assert_allclose(chosen_union.mean(0)[:4], union.mean(0)[:4], atol=0.02)
    # a plain random draw of patients of the same size deviates more on the common classes
    rng = np.random.default_rng(0)
    random_patients = rng.choice(len(union), len(chosen_union), replace=False)
    stratified_error = np.abs(chosen_union.mean(0) - union.mean(0))[:4].sum()
    random_error = np.abs(union[random_patients].mean(0) - union.mean(0))[:4].sum()
    assert stratified_error < random_error


def test_seeded_and_deterministic(pool):
    patients, labels = pool
    a = sample_label_fraction(patients, labels, 0.1, seed=7)
    b = sample_label_fraction(patients, labels, 0.1, seed=7)
    c = sample_label_fraction(patients, labels, 0.1, seed=8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_full_fraction_and_bad_fraction(pool):
    patients, labels = pool
    np.testing.assert_array_equal(sample_label_fraction(patients, labels, 1.0, seed=0), np.arange(len(patients)))
    with pytest.raises(ValueError, match="fraction"):
        sample_label_fraction(patients, labels, 0.0, seed=0)
