"""The torch-free reader of legacy .pth files, and its refusal to run code."""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from inference.formats.torch_weights import (
    LEGACY_MAGIC,
    LEGACY_PROTOCOL,
    UnsafePickleError,
    load_state_dict,
)
from inference.models.efficientnet_lite import LITE_CONFIGS, weights_path
from inference.registry.zoo import ZOO


class _FakeStorage:
    def __init__(self, key: str, array: np.ndarray, type_name: str) -> None:
        self.key, self.array, self.type_name = key, array.reshape(-1), type_name


class _FakeTensor:
    """Pickles the way torch pickles a tensor: _rebuild_tensor_v2(storage, ...)."""

    def __init__(self, storage: _FakeStorage, offset: int, shape: tuple, stride: tuple) -> None:
        self.args = (storage, offset, shape, stride, False, collections.OrderedDict())

    def __reduce__(self):
        return (sys.modules["torch._utils"]._rebuild_tensor_v2, self.args)


def _install_fake_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Module objects that let pickle record torch's global names without torch."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):  # only its qualified name is pickled
        raise AssertionError("never called while writing")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    for name in ("FloatStorage", "HalfStorage", "LongStorage"):
        cls = type(name, (), {"__module__": "torch"})
        setattr(torch, name, cls)
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)


def write_legacy_checkpoint(path: Path, state: dict, storages: list[_FakeStorage]) -> None:
    """Write ``state`` in torch's legacy serialization format, byte for byte."""
    torch = sys.modules["torch"]

    class Writer(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, _FakeStorage):
                return ("storage", getattr(torch, obj.type_name), obj.key, "cpu", obj.array.size)
            return None

    buffer = io.BytesIO()
    for record in (
        LEGACY_MAGIC,
        LEGACY_PROTOCOL,
        {"protocol_version": 1001, "little_endian": True},
    ):
        pickle.dump(record, buffer, protocol=2)
    Writer(buffer, protocol=2).dump(state)
    pickle.dump([s.key for s in storages], buffer, protocol=2)
    for storage in storages:
        buffer.write(struct.pack("<q", storage.array.size))
        buffer.write(storage.array.tobytes())
    path.write_bytes(buffer.getvalue())


def test_reads_strided_and_half_tensors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _install_fake_torch(monkeypatch)
    base = np.arange(12, dtype=np.float32).reshape(3, 4)
    floats = _FakeStorage("0", base, "FloatStorage")
    halves = _FakeStorage("1", np.array([0.5, -2.0, 3.25], np.float16), "HalfStorage")
    steps = _FakeStorage("2", np.array([7], np.int64), "LongStorage")
    state = collections.OrderedDict(
        # A transposed view, (4, 3) with strides (1, 4): the layout torch's
        # channels-last weights use in the EfficientNet-Lite files.
        transposed=_FakeTensor(floats, 0, (4, 3), (1, 4)),
        row=_FakeTensor(floats, 4, (4,), (1,)),
        half=_FakeTensor(halves, 0, (3,), (1,)),
        scalar=_FakeTensor(steps, 0, (), ()),
    )
    path = tmp_path / "small.pth"
    write_legacy_checkpoint(path, state, [floats, halves, steps])
    monkeypatch.delitem(sys.modules, "torch")
    monkeypatch.delitem(sys.modules, "torch._utils")

    loaded = load_state_dict(path)

    np.testing.assert_array_equal(loaded["transposed"], base.T)
    np.testing.assert_array_equal(loaded["row"], base[1])
    assert loaded["half"].dtype == np.float16
    np.testing.assert_array_equal(loaded["half"], [0.5, -2.0, 3.25])
    assert int(loaded["scalar"]) == 7
    assert list(loaded) == ["transposed", "row", "half", "scalar"]


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_refuses_a_pickle_that_asks_for_another_class(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _install_fake_torch(monkeypatch)
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pth"
    write_legacy_checkpoint(path, collections.OrderedDict(payload=_RunsCode(marker)), [])

    with pytest.raises(UnsafePickleError, match=r"refusing to load (posix|os)\.system"):
        load_state_dict(path)
    assert not marker.exists()


def test_refuses_code_in_the_header_records(tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil-header.pth"
    path.write_bytes(pickle.dumps(_RunsCode(marker), protocol=2))

    with pytest.raises(UnsafePickleError):
        load_state_dict(path)
    assert not marker.exists()


def test_refuses_builtins_even_when_harmless_looking(tmp_path: Path) -> None:
    path = tmp_path / "eval.pth"
    buffer = io.BytesIO()
    pickle.dump(LEGACY_MAGIC, buffer, protocol=2)
    pickle.dump(LEGACY_PROTOCOL, buffer, protocol=2)
    pickle.dump({"little_endian": True}, buffer, protocol=2)
    pickle.dump({"x": print}, buffer, protocol=2)  # builtins.print
    path.write_bytes(buffer.getvalue())

    with pytest.raises(UnsafePickleError, match=r"(__builtin__|builtins)\.print"):
        load_state_dict(path)


def test_truncated_file_is_an_error(tmp_path: Path) -> None:
    original = weights_path(ZOO["efficientnet_lite0"].weights.package).read_bytes()
    path = tmp_path / "truncated.pth"
    path.write_bytes(original[: len(original) // 2])

    with pytest.raises(pickle.UnpicklingError, match="truncated"):
        load_state_dict(path)


def test_not_a_checkpoint_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "numbers.pth"
    path.write_bytes(pickle.dumps(12345, protocol=2) * 3)

    with pytest.raises(pickle.UnpicklingError, match="expected a legacy PyTorch checkpoint"):
        load_state_dict(path)


@pytest.mark.parametrize("name", list(LITE_CONFIGS))
def test_reads_the_bundled_efficientnet_lite_weights(name: str) -> None:
    state = load_state_dict(weights_path(ZOO[name].weights.package))

    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_fc.weight"].shape == (1000, 1280)
    assert all(v.flags["C_CONTIGUOUS"] for v in state.values())
    # Batch-norm variances of a trained network are non-negative, not all zero.
    assert np.all(state["_bn0.running_var"] >= 0)
    assert state["_bn0.running_var"].max() > 0
    assert all(np.isfinite(v).all() for v in state.values() if v.dtype.kind == "f")
