"""The arrays-only unpicklers: plain arrays load; code, structured or forged dtypes and joblib object arrays don't."""

import io
import os
import pickle

import joblib
import numpy as np
import pytest

from datasets.safe_pickle import ArraysOnlyUnpickler, check_joblib_arrays


def load(data: bytes):
    return ArraysOnlyUnpickler(io.BytesIO(data)).load()


class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class ForgedDtype:
    """An object dtype whose flags say it holds no references: numpy would read raw bytes as object pointers."""

    def __reduce__(self):
        return (np.dtype, ("O8", False, True), (3, "|", None, None, None, -1, -1, 0))


def test_numbers_and_object_arrays_of_plain_values_load():
    words = np.array({"春": 1, "花": 2}, dtype=object)
    assert load(pickle.dumps(words)).item() == {"春": 1, "花": 2}
    assert np.array_equal(load(pickle.dumps(np.arange(6.0).reshape(2, 3))), np.arange(6.0).reshape(2, 3))


def test_a_pickle_that_would_run_code_is_refused_and_nothing_runs(tmp_path):
    with pytest.raises(pickle.UnpicklingError, match="refused to load posix.system"):
        load(pickle.dumps(RunsCode(tmp_path / "ran")))
    assert not (tmp_path / "ran").exists()


def test_structured_and_forged_dtypes_are_refused():
    with pytest.raises(pickle.UnpicklingError, match="structured or forged"):
        load(pickle.dumps(np.zeros(2, dtype=[("a", "O")])))
    with pytest.raises(pickle.UnpicklingError, match="structured or forged"):
        load(pickle.dumps(ForgedDtype()))


def test_joblib_files_of_numbers_pass_and_object_arrays_or_code_do_not(tmp_path):
    joblib.dump(np.ones((3, 9)), tmp_path / "numbers.pkz", compress=6)
    check_joblib_arrays(tmp_path / "numbers.pkz")
    joblib.dump(np.array([{"a": 1}], dtype=object), tmp_path / "objects.pkz", compress=6)
    with pytest.raises(ValueError, match="object array"):
        check_joblib_arrays(tmp_path / "objects.pkz")
    joblib.dump([np.ones(2), RunsCode(tmp_path / "ran")], tmp_path / "code.pkz")
    with pytest.raises(ValueError, match="refused to load posix.system"):
        check_joblib_arrays(tmp_path / "code.pkz")
    assert not (tmp_path / "ran").exists()
