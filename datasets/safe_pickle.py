"""Pickled data files read without running code: only numpy arrays of plain values are built.

Two data formats the books use are pickles: the Tang poems' ``tang.npz`` (object arrays holding dicts) and
scikit-learn's joblib cache of California housing (``cal_housing_py3.pkz``). A pickle can name any Python callable
and have it called while it loads, so a file from elsewhere is read with an unpickler that refuses every global but
numpy's array builders. (CIFAR-10's batches are pickles too: torchvision reads only files whose md5 is the official
archive's.)

Refusing globals is not quite enough: a pickled ``numpy.dtype`` carries its own flags and fields, and a forged one
(an object field whose "holds references" flag is cleared) makes numpy read raw bytes as object pointers. Every
dtype built is therefore checked against the canonical dtype of the same type code, and joblib arrays must hold
plain numbers (California's is float64).

    ArraysOnlyUnpickler(stream).load()      # a plain pickle
    check_joblib_arrays(path)               # raises ValueError unless the joblib file holds only arrays
"""

import io
import pickle
import zlib
from pathlib import Path
from typing import Any

import numpy as np

# Taken from numpy's own pickles, so that numpy 1.x ("numpy.core.multiarray") and 2.x ("numpy._core.multiarray")
# files both load.
_RECONSTRUCT = np.empty(0).__reduce__()[0]
_SCALAR = np.float64(0).__reduce__()[0]
NUMPY_PICKLE_GLOBALS = {
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "scalar"): _SCALAR,
    ("numpy.core.multiarray", "scalar"): _SCALAR,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}
JOBLIB_ARRAY = ("joblib.numpy_pickle", "NumpyArrayWrapper")  # joblib's header before an array's raw bytes
ZLIB_HEADER = b"\x78"


def refuse(module: str, name: str) -> pickle.UnpicklingError:
    return pickle.UnpicklingError(f"refused to load {module}.{name}: only numpy arrays of plain values load")


def check_plain_dtype(dtype: Any) -> None:
    """A dtype with no fields, no sub-array and exactly the flags numpy gives its type code."""
    if not isinstance(dtype, np.dtype):
        raise pickle.UnpicklingError(f"expected a numpy dtype, found {type(dtype).__name__}")
    if dtype.fields is not None or dtype.subdtype is not None or dtype.flags != np.dtype(dtype.str).flags:
        raise pickle.UnpicklingError(f"refused a structured or forged numpy dtype ({dtype.str})")


def checked_build(base_build: Any) -> Any:
    """A BUILD opcode handler that runs ``base_build`` and then checks any dtype it just set up."""

    def load_build(unpickler: pickle._Unpickler) -> None:
        target = unpickler.stack[-2]
        base_build(unpickler)
        if isinstance(target, np.dtype):
            check_plain_dtype(target)

    return load_build


class ArraysOnlyUnpickler(pickle._Unpickler):
    """Builds numpy arrays (object arrays of plain Python values included), and nothing else. The pure-Python
    unpickler, so that each BUILD can be checked."""

    dispatch = dict(pickle._Unpickler.dispatch)
    dispatch[pickle.BUILD[0]] = checked_build(pickle._Unpickler.load_build)

    def find_class(self, module: str, name: str) -> Any:
        allowed = NUMPY_PICKLE_GLOBALS.get((module, name))
        if allowed is None:
            raise refuse(module, name)
        return allowed


def check_joblib_arrays(path: Path) -> None:
    """Read a joblib file with an unpickler that builds only arrays of plain numbers; ``ValueError`` (naming the
    refused global, or the damage) unless that is all it holds. scikit-learn then reads it itself."""
    from joblib import numpy_pickle  # scikit-learn's dependency, loaded only for its caches

    def numbers_only(unpickler: pickle._Unpickler) -> None:
        target, state = unpickler.stack[-2], unpickler.stack[-1]
        if isinstance(target, numpy_pickle.NumpyArrayWrapper):  # joblib reads its array as soon as it is built
            dtype = state.get("dtype") if isinstance(state, dict) else None
            check_plain_dtype(dtype)
            if dtype.hasobject:  # (older joblib versions read object arrays with a plain pickle.load)
                raise pickle.UnpicklingError("refused an object array in a joblib file: only numbers load")
        checked_build(numpy_pickle.NumpyUnpickler.load_build)(unpickler)

    class ArraysOnlyJoblibUnpickler(numpy_pickle.NumpyUnpickler):
        dispatch = dict(numpy_pickle.NumpyUnpickler.dispatch)
        dispatch[pickle.BUILD[0]] = numbers_only

        def find_class(self, module: str, name: str) -> Any:
            if (module, name) in NUMPY_PICKLE_GLOBALS or (module, name) == JOBLIB_ARRAY:
                return super().find_class(module, name)
            raise refuse(module, name)

    try:
        data = Path(path).read_bytes()
        if data[:1] == ZLIB_HEADER:  # joblib's compress=N (scikit-learn's caches): one zlib stream
            data = zlib.decompressobj().decompress(data)
        ArraysOnlyJoblibUnpickler(str(path), io.BytesIO(data), False).load()
    except (
        pickle.UnpicklingError,
        zlib.error,
        EOFError,
        OSError,
        ValueError,
        TypeError,
        AttributeError,
        KeyError,
        IndexError,
    ) as error:
        raise ValueError(f"{path.name}: {error}") from None
