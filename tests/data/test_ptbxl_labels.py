"""PTB-XL benchmark label derivation, scp_codes parsing and multi-hot encoding."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from esi.data.ptbxl import (
    PtbxlLabeler,
    PtbxlRecordError,
    load_statements,
    multi_hot,
    parse_scp_codes,
    ptbxl_features,
    task_class_names,
)


@pytest.fixture(scope="module")
def statements(ptbxl_sample_dir):
    return load_statements(ptbxl_sample_dir)


@pytest.mark.parametrize(
    ("task", "size"),
    [("all", 71), ("diagnostic", 44), ("subdiagnostic", 23), ("superdiagnostic", 5), ("form", 19), ("rhythm", 12)],
)
def test_task_sizes_match_ptbxl_benchmark(statements, ptbxl_sample_dir, task, size):
    names = task_class_names(statements, task)
    assert len(names) == size and names == sorted(names)
    assert task_class_names(ptbxl_sample_dir, task) == names
    assert task_class_names(ptbxl_features(statements, 100), task) == names


def test_unknown_task_is_rejected(statements):
    with pytest.raises(ValueError, match="unknown task 'superclass'"):
        task_class_names(statements, "superclass")


def test_labeler_maps_codes_through_statements(statements):
    labels = PtbxlLabeler(statements)(7, {"IMI": 100.0, "LVH": 50.0, "SR": 0.0, "LVOLT": 0.0})

    def names(task):
        return [task_class_names(statements, task)[i] for i in labels[task]]

    assert names("all") == ["IMI", "LVH", "LVOLT", "SR"]
    assert names("diagnostic") == ["IMI", "LVH"]
    assert names("subdiagnostic") == ["IMI", "LVH"]
    assert names("superdiagnostic") == ["HYP", "MI"]
    assert names("form") == ["LVOLT"]
    assert names("rhythm") == ["SR"]


def test_codes_that_are_both_diagnostic_and_form(statements):
    labels = PtbxlLabeler(statements)(1, {"NDT": 100.0})
    assert [task_class_names(statements, "form")[i] for i in labels["form"]] == ["NDT"]
    assert [task_class_names(statements, "superdiagnostic")[i] for i in labels["superdiagnostic"]] == ["STTC"]
    assert labels["rhythm"] == []


def test_unknown_code_names_record(statements):
    with pytest.raises(PtbxlRecordError, match="ecg_id 42: unknown SCP code 'FOO'"):
        PtbxlLabeler(statements)(42, {"NORM": 100.0, "FOO": 0.0})


def test_parse_scp_codes_accepts_ptbxl_cells():
    assert parse_scp_codes(1, "{'NORM': 100.0, 'LVOLT': 0.0, 'SR': 0.0}") == {"NORM": 100.0, "LVOLT": 0.0, "SR": 0.0}
    assert parse_scp_codes(1, "{}") == {}


@pytest.mark.parametrize(
    ("cell", "problem"),
    [
        ("{'NORM': 100.0", "malformed scp_codes"),
        ("__import__('os').getcwd()", "malformed scp_codes"),
        ("['NORM']", "is not a dict"),
        ("{'NORM': 150.0}", "outside 0-100"),
        ("{'NORM': True}", "is not code -> number"),
        (float("nan"), "empty or not text"),
    ],
)
def test_parse_scp_codes_rejects_bad_cells(cell, problem):
    with pytest.raises(PtbxlRecordError, match=f"ecg_id 9: .*{problem}"):
        parse_scp_codes(9, cell)


def test_error_survives_pickling():
    err = pickle.loads(pickle.dumps(PtbxlRecordError(5, "broken")))
    assert (err.ecg_id, err.problem, str(err)) == (5, "broken", "PTB-XL ecg_id 5: broken")


def test_multi_hot_single_and_batch():
    np.testing.assert_array_equal(multi_hot([0, 3], 5), np.array([1, 0, 0, 1, 0], dtype=np.float32))
    np.testing.assert_array_equal(multi_hot([], 3), np.zeros(3, dtype=np.float32))
    batch = multi_hot([[1], [], [0, 2]], 3)
    assert batch.dtype == np.float32
    np.testing.assert_array_equal(batch, np.array([[0, 1, 0], [0, 0, 0], [1, 0, 1]], dtype=np.float32))
    with pytest.raises(ValueError, match="out of range"):
        multi_hot([5], 5)
