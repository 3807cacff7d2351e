"""Pickled data files read without running code: only numpy arrays of plain values are built.

Two data formats the books use are pickles: the Tang poems' ``tang.npz`` (object arrays holding dicts) and
scikit-learn's joblib cache of California housing (``cal_housing_py3.pkz``). A pickle can name any Python callable
and have it called while it loads, so a file from elsewhere is read with an unpickler that refuses every global but
numpy's array builders. (CIFAR-10's batches are pickles too: torchvision reads only files whose md5 is the official
archive's.)

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


class ArraysOnlyUnpickler(pickle.Unpickler):
    """Builds numpy arrays (object arrays of plain Python values included), and nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        allowed = NUMPY_PICKLE_GLOBALS.get((module, name))
        if allowed is None:
            raise refuse(module, name)
        return allowed


def check_joblib_arrays(path: Path) -> None:
    """Read a joblib file with an unpickler that builds only arrays; ``ValueError`` (naming the refused global,
    or the damage) unless that is all it holds. scikit-learn then reads it itself."""
    from joblib import numpy_pickle  # scikit-learn's dependency, loaded only for its caches

    class ArraysOnlyJoblibUnpickler(numpy_pickle.NumpyUnpickler):
        def find_class(self, module: str, name: str) -> Any:
            if (module, name) in NUMPY_PICKLE_GLOBALS or (module, name) == JOBLIB_ARRAY:
                return super().find_class(module, name)
            raise refuse(module, name)

    try:
        data = Path(path).read_bytes()
        if data[:1] == ZLIB_HEADER:  # joblib's compress=N (scikit-learn's caches): one zlib stream
            data = zlib.decompressobj().decompress(data)
        ArraysOnlyJoblibUnpickler(str(path), io.BytesIO(data), False).load()
    except (pickle.UnpicklingError, zlib.error, EOFError, OSError, ValueError, TypeError, AttributeError,
            KeyError, IndexError) as error:  # fmt: skip
        raise ValueError(f"{path.name}: {error}") from None
