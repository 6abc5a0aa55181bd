"""TFLite metadata: the files the app writes carry labels and input scaling; brought back, used."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as tfl

from inference import ZOO, InputError, Variant, custom_spec
from inference.formats._vendor.metadata_schema import ModelMetadata
from inference.formats.images import normalize
from inference.formats.tflite_metadata import NORMALIZATION, read_metadata, with_metadata
from tests.conftest import CAT_CLASSES, RunnerPool, run_cli

LITE0 = ZOO["efficientnet_lite0"]


def test_normalization_options_give_the_apps_own_scaling() -> None:
    pixels = np.random.default_rng(0).uniform(0, 255, (1, 4, 4, 3)).astype(np.float32)
    for mode, options in NORMALIZATION.items():
        if options is None:
            assert mode == "caffe"  # BGR order: not expressible, so not written
            continue
        mean, std = (np.asarray(v, np.float32) for v in options)
        np.testing.assert_allclose((pixels - mean) / std, normalize(pixels, mode), atol=1e-5)


@pytest.fixture(scope="module")
def lite0_files(runners: RunnerPool) -> dict[Variant, Path]:
    return runners.convert("efficientnet_lite0", [Variant.FP32, Variant.INT8])


def test_files_the_app_writes_carry_labels_and_input_scaling(
    lite0_files: dict[Variant, Path],
) -> None:
    for path in lite0_files.values():
        data = path.read_bytes()
        found = read_metadata(data)
        assert found is not None and found.name == LITE0.title
        assert found.labels == LITE0.labels and found.normalize == "lite"
        assert (found.mean, found.std) == ((127.0,), (128.0,))
        # The layout tflite-support's MetadataPopulator documents: a TFLITE_METADATA
        # buffer holding an M001 flatbuffer, and labels.txt in a stored zip at the end.
        model = tfl.Model.GetRootAs(data, 0)
        (entry,) = [
            model.Metadata(i)
            for i in range(model.MetadataLength())
            if model.Metadata(i).Name() == b"TFLITE_METADATA"
        ]
        buffer = model.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
        assert ModelMetadata.ModelMetadataBufferHasIdentifier(buffer, 0)
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            (info,) = archive.infolist()
            assert info.filename == "labels.txt" and info.compress_type == zipfile.ZIP_STORED


def test_a_file_with_metadata_brought_back_needs_no_labels_or_scaling(
    brought_lite0: Path, chelsea: Path, coffee: Path
) -> None:
    brought = brought_lite0  # its int8 is made once, here or in tests/test_quantize.py

    spec = custom_spec(brought)  # no labels file, no --normalize
    assert spec.labels == LITE0.labels and spec.preprocessing.normalize == "lite"

    result = run_cli("predict", str(chelsea), str(coffee), "--model", str(brought),
                     "--variant", "fp32,int8", "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    tops = [row["top_k"][0]["label"] for row in json.loads(result.stdout)]
    assert tops[0] in CAT_CLASSES and tops[1] in CAT_CLASSES
    assert tops[2:] == ["espresso", "espresso"]


def test_metadata_replaced_not_stacked_and_outputs_unchanged(
    lite0_files: dict[Variant, Path],
) -> None:
    from ai_edge_litert.interpreter import Interpreter

    first = lite0_files[Variant.FP32].read_bytes()
    again = with_metadata(first, name="n", description="d", labels=("a", "b"), normalize="tf")
    found = read_metadata(again)
    assert found is not None and found.labels == ("a", "b") and found.normalize == "tf"
    assert abs(len(again) - len(first)) < 20_000  # the old labels and metadata are gone
    batch = np.random.default_rng(1).uniform(-1, 1, (1, 224, 224, 3)).astype(np.float32)
    outputs = []
    for data in (first, again):
        runner = Interpreter(model_content=data).get_signature_runner()
        outputs.append(next(iter(runner(image=batch).values())))
    np.testing.assert_array_equal(*outputs)


def test_an_inflating_labels_file_is_refused_from_the_zip_directory(
    lite0_files: dict[Variant, Path], tmp_path: Path
) -> None:
    flatbuffer = _without_archive(lite0_files[Variant.INT8].read_bytes())
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("labels.txt", "cat\n" * 1_000_000)  # 4 MB, ~4 KB compressed
    data = flatbuffer + bomb.getvalue()
    assert len(data) < len(flatbuffer) + 20_000

    with pytest.raises(InputError, match=r"labels file 'labels\.txt' is 4 MB; refused"):
        read_metadata(data)
    path = tmp_path / "bomb.tflite"
    path.write_bytes(data)
    result = run_cli("predict", str(path), "--model", str(path))
    assert result.returncode != 0 and "refused" in result.stderr


def test_garbage_in_the_metadata_buffer_is_ignored(lite0_files: dict[Variant, Path]) -> None:
    graph = tfl.ModelT.InitFromPackedBuf(lite0_files[Variant.INT8].read_bytes(), 0)
    for entry in graph.metadata:
        if entry.name == b"TFLITE_METADATA":
            graph.buffers[entry.buffer].data = np.frombuffer(b"not a flatbuffer", np.uint8)
    import flatbuffers

    builder = flatbuffers.Builder(0)
    builder.Finish(graph.Pack(builder), b"TFL3")
    assert read_metadata(bytes(builder.Output())) is None


def _without_archive(data: bytes) -> bytes:
    """The flatbuffer alone (ModelT packs only the flatbuffer, not the appended zip)."""
    import flatbuffers

    builder = flatbuffers.Builder(0)
    builder.Finish(tfl.ModelT.InitFromPackedBuf(data, 0).Pack(builder), b"TFL3")
    return bytes(builder.Output())
