"""Labels and input normalization inside a ``.tflite`` file, as TFLite model metadata.

The layout MediaPipe's ImageClassifier (and LiteRT's task libraries) read: a
``TFLITE_METADATA`` buffer holding a ``ModelMetadata`` flatbuffer (file
identifier ``M001``) whose input tensor carries ``NormalizationOptions`` (mean
and std per channel, applied to 0-255 pixels) and ``ImageProperties``, and
whose output tensor names a ``TENSOR_AXIS_LABELS`` file; that file travels in a
zip archive appended to the model, which the TFLite runtime ignores.

Written here rather than with a maintained writer because none installs beside
TensorFlow 2.21: tflite-support pins protobuf < 4, and MediaPipe's writer
brings opencv-contrib-python and matplotlib into the server. The schema code
is flatc's own (:mod:`inference.formats._vendor.metadata_schema`); this module only fills it
in, the way tflite-support's ``MetadataPopulator`` does (checked in
tests/test_metadata.py against the layout it documents).
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as tfl

from inference.core.errors import InputError
from inference.core.specs import ModelSpec, NormalizeMode
from inference.formats._vendor import metadata_schema as md
from inference.formats.tflite_file import pack_model, unpack_model

__all__ = ["NORMALIZATION", "FileMetadata", "describe_spec", "read_metadata", "with_metadata"]

METADATA_NAME = "TFLITE_METADATA"
METADATA_IDENTIFIER = b"M001"
LABELS_FILE = "labels.txt"
MAX_LABELS_BYTES = 2_000_000
"""A labels file inside a file someone brings is read only up to this size."""
MAX_ARCHIVE_ENTRIES = 16

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
NORMALIZATION: dict[NormalizeMode, tuple[tuple[float, ...], tuple[float, ...]] | None] = {
    "lite": ((127.0,), (128.0,)),
    "tf": ((127.5,), (127.5,)),
    "torch": (
        tuple(255 * m for m in _IMAGENET_MEAN),
        tuple(255 * s for s in _IMAGENET_STD),
    ),
    "caffe": None,  # BGR channel order: NormalizationOptions cannot say it
    "raw": ((0.0,), (1.0,)),
    "unit": ((0.0,), (255.0,)),
}
"""(mean, std) on 0-255 pixels: the model's input is (pixel - mean) / std."""


@dataclass(frozen=True)
class FileMetadata:
    """What a ``.tflite`` file says about itself."""

    name: str
    labels: tuple[str, ...]
    """Empty when the file names no labels."""
    normalize: NormalizeMode | None
    """The matching mode, or None when absent or not one this app knows."""
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()


def describe_spec(spec: ModelSpec) -> dict[str, Any]:
    """The keyword arguments of :func:`with_metadata` for ``spec`` (JSON-ready, for a child)."""
    return {
        "name": spec.title,
        "description": spec.description or spec.title,
        "labels": list(spec.labels),
        "normalize": spec.preprocessing.normalize,
        "grayscale": spec.preprocessing.color_mode == "L",
    }


def with_metadata(
    model: bytes,
    *,
    name: str,
    description: str,
    labels: Sequence[str],
    normalize: NormalizeMode,
    grayscale: bool = False,
) -> bytes:
    """``model`` with labels and normalization as metadata (any earlier metadata replaced)."""
    norm = NORMALIZATION[normalize]
    color = md.ImagePropertiesT()
    color.colorSpace = md.ColorSpaceType.GRAYSCALE if grayscale else md.ColorSpaceType.RGB
    image = _tensor("image", "Input image", md.ContentProperties.ImageProperties, color)
    if norm is not None:
        unit = md.ProcessUnitT()
        unit.optionsType = md.ProcessUnitOptions.NormalizationOptions
        unit.options = md.NormalizationOptionsT()
        unit.options.mean, unit.options.std = list(norm[0]), list(norm[1])
        image.processUnits = [unit]
    image.stats = md.StatsT()
    image.stats.max, image.stats.min = [255.0], [0.0]

    scores = _tensor(
        "probability",
        "Probability of each class",
        md.ContentProperties.FeatureProperties,
        md.FeaturePropertiesT(),
    )
    labels_file = md.AssociatedFileT()
    labels_file.name = LABELS_FILE
    labels_file.description = "One label per class, in output order"
    labels_file.type = md.AssociatedFileType.TENSOR_AXIS_LABELS
    scores.associatedFiles = [labels_file]

    subgraph = md.SubGraphMetadataT()
    subgraph.inputTensorMetadata = [image]
    subgraph.outputTensorMetadata = [scores]
    metadata = md.ModelMetadataT()
    metadata.name = name
    metadata.description = description
    metadata.subgraphMetadata = [subgraph]
    metadata.minParserVersion = "1.0.0"
    builder = flatbuffers.Builder(1024)
    builder.Finish(metadata.Pack(builder), METADATA_IDENTIFIER)

    graph = unpack_model(model)  # an archive appended earlier is left behind
    for old in graph.metadata or []:
        if _text(old.name) == METADATA_NAME:  # replaced: its buffer is emptied, not left behind
            graph.buffers[old.buffer].data = None
    graph.metadata = [m for m in graph.metadata or [] if _text(m.name) != METADATA_NAME]
    buffer = tfl.BufferT()
    buffer.data = np.frombuffer(bytes(builder.Output()), dtype=np.uint8)
    graph.buffers.append(buffer)
    entry = tfl.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(graph.buffers) - 1
    graph.metadata.append(entry)
    packed = io.BytesIO(pack_model(graph, len(model)))
    packed.seek(0, io.SEEK_END)
    with zipfile.ZipFile(packed, "a", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(LABELS_FILE, "\n".join(labels) + "\n")
    return packed.getvalue()


def _tensor(name: str, description: str, kind: int, properties: Any) -> md.TensorMetadataT:
    tensor = md.TensorMetadataT()
    tensor.name, tensor.description = name, description
    tensor.content = md.ContentT()
    tensor.content.contentPropertiesType = kind
    tensor.content.contentProperties = properties
    return tensor


def _text(value: bytes | str | None) -> str:
    return value.decode() if isinstance(value, bytes) else value or ""


def read_metadata(model: bytes) -> FileMetadata | None:
    """Labels and normalization a ``.tflite`` file declares, or None if it declares none.

    Raises:
        InputError: The metadata is there but malformed, or its labels file is too large.
    """
    try:
        graph = tfl.Model.GetRootAs(model, 0)
        buffer_index = next(
            (
                graph.Metadata(i).Buffer()
                for i in range(graph.MetadataLength())
                if _text(graph.Metadata(i).Name()) == METADATA_NAME
            ),
            None,
        )
        if buffer_index is None:
            return None
        raw = graph.Buffers(buffer_index).DataAsNumpy()
        if not isinstance(raw, np.ndarray) or not md.ModelMetadata.ModelMetadataBufferHasIdentifier(
            raw.tobytes(), 0
        ):
            return None
        metadata = md.ModelMetadataT.InitFromPackedBuf(raw.tobytes(), 0)
    except Exception as exc:  # a flatbuffer of any shape can fail in many ways
        raise InputError(
            f"the file's TFLite metadata is malformed ({type(exc).__name__})"
        ) from None
    subgraph = (metadata.subgraphMetadata or [None])[0]
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    label_file = None
    if subgraph is not None:
        for tensor in subgraph.inputTensorMetadata or []:
            for unit in tensor.processUnits or []:
                if unit.optionsType == md.ProcessUnitOptions.NormalizationOptions:
                    mean = tuple(float(v) for v in unit.options.mean)
                    std = tuple(float(v) for v in unit.options.std)
        for tensor in subgraph.outputTensorMetadata or []:
            for file in tensor.associatedFiles or []:
                if file.type == md.AssociatedFileType.TENSOR_AXIS_LABELS:
                    label_file = _text(file.name)
    labels = _read_labels(model, label_file) if label_file else ()
    return FileMetadata(
        name=_text(metadata.name), labels=labels, normalize=_mode(mean, std), mean=mean, std=std
    )


def _mode(mean: tuple[float, ...], std: tuple[float, ...]) -> NormalizeMode | None:
    if not mean or not std:
        return None
    for mode, norm in NORMALIZATION.items():
        if norm is None:
            continue
        want_mean, want_std = norm
        if len(mean) not in (1, len(want_mean)) or len(std) not in (1, len(want_std)):
            continue
        if np.allclose(
            np.broadcast_to(mean, (3,)), np.broadcast_to(want_mean, (3,)), atol=1e-2
        ) and np.allclose(np.broadcast_to(std, (3,)), np.broadcast_to(want_std, (3,)), atol=1e-2):
            return mode
    return None


def _read_labels(model: bytes, name: str) -> tuple[str, ...]:
    try:
        with zipfile.ZipFile(io.BytesIO(model)) as archive:
            infos = archive.infolist()
            if len(infos) > MAX_ARCHIVE_ENTRIES:
                raise InputError(f"the file packs {len(infos)} associated files; refused")
            info = next((i for i in infos if i.filename == name), None)
            if info is None:
                return ()
            if info.file_size > MAX_LABELS_BYTES:  # read from the zip directory, not inflated
                raise InputError(
                    f"its labels file {name!r} is {info.file_size / 1e6:.0f} MB; refused"
                )
            text = archive.read(info).decode("utf-8", errors="replace")
    except zipfile.BadZipFile:
        return ()
    return tuple(line.strip() for line in text.splitlines() if line.strip())
