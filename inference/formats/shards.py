"""Shards of a labelled image set, and reading one in whatever process holds it.

A labelled set (:mod:`inference.formats.datasets`) is cut into shards: a slice of
a listing of files or zip members, one Parquet row group, one WebDataset tar. A
:class:`Shard` is a small picklable value that names its files by path, and
:func:`read_shard` opens them itself, so a worker process (or a Ray task on a
node that sees the same files) reads its shard with nothing else shared.

Reading streams: a zip member, a Parquet batch or a tar sample is read when it
is reached, never a whole shard's images at once. An image that cannot be used
is one problem line, and the rest of the shard goes on.
"""

from __future__ import annotations

import functools
import json
import re
import tarfile
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from inference.core.errors import InputError

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_MEMBER_BYTES",
    "Record",
    "Shard",
    "class_index",
    "label_key",
    "match_names",
    "parquet_columns",
    "read_shard",
    "resolve_labels",
    "zip_member_problem",
    "zip_records",
]

MAX_MEMBER_BYTES = 100_000_000
"""Uncompressed size of one member: each is read into memory on its own, when it is used."""
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp")
"""Extensions of a WebDataset sample's image member."""
PARQUET_BATCH_ROWS = 8
"""Rows of a Parquet row group decoded at a time: memory is one row group's pages (read
whole, as the file stores them) and this many images."""
_READABLE_COMPRESSION = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2,
                         zipfile.ZIP_LZMA}  # fmt: skip
_IMAGE_COLUMNS = ("image", "img", "jpg", "png", "bytes")
_LABEL_COLUMNS = ("label", "labels")


@dataclass(frozen=True)
class Shard:
    """A slice of a source that a worker process (or a Ray task on another node) reads itself."""

    index: int
    """Shard number: records sort by ``(shard.index, offset)``."""
    kind: str
    """``"files"``, ``"zip"``, ``"parquet"`` or ``"tar"``."""
    location: str
    """The zip, Parquet or tar file (``""`` for files, and for a zip held in memory)."""
    labels: tuple[str, ...]
    """The model's labels, to match the class names read inside the shard."""
    items: tuple[tuple[str, str, int], ...] = ()
    """Files: ``(shown name, file path, label)``; zip: ``(shown name, member name, label)``."""
    row_group: int = -1
    """Parquet: the row group."""
    count: int | None = None
    """Records in the shard, if known (``None`` for a tar until it is read)."""


@dataclass(frozen=True)
class Record:
    """One usable image of a shard, with its true class index."""

    shard: int
    offset: int
    """Position in its shard, counting unusable items too: the same whoever reads the shard,
    and a gap where a problem was reported."""
    name: str
    """Shown in reports: ``class_folder/file``, ``file.parquet:row``, a tar sample's member."""
    label: int
    data: bytes | Path
    """Encoded image bytes, or a file path."""


def label_key(name: str) -> str:
    """Compare class names ignoring case and punctuation: ``T-shirt/top`` -> ``tshirttop``."""
    return re.sub(r"[\W_]+", "", name.casefold())


@functools.lru_cache(maxsize=8)
def _by_key(labels: tuple[str, ...]) -> dict[str, list[int]]:
    by_key: dict[str, list[int]] = {}
    for index, label in enumerate(labels):
        by_key.setdefault(label_key(label), []).append(index)
    return by_key


def match_names(
    names: Iterable[str],
    labels: Sequence[str],
    *,
    noun: str = "class folder",
    expected: str = "folder names",
) -> dict[str, int]:
    """Each name's class index (case and punctuation ignored).

    Raises:
        InputError: A name matches several labels, or names match none (all named).
    """
    by_key = _by_key(tuple(labels))
    matched, unmatched = {}, []
    for name in names:
        indices = by_key.get(label_key(name), []) if label_key(name) else []
        if not indices:
            unmatched.append(name)
        elif len(indices) > 1:
            raise InputError(
                f"{noun} {name!r} matches {len(indices)} labels of this model "
                f"(indices {', '.join(map(str, indices))}); it cannot be scored unambiguously"
            )
        else:
            matched[name] = indices[0]
    if unmatched:
        examples = ", ".join(repr(label) for label in labels[:4])
        raise InputError(
            f"{noun}(s) {', '.join(repr(n) for n in sorted(unmatched))} match no label of "
            f"this model; expected {expected} like {examples} (case and punctuation ignored)"
        )
    return matched


def _as_index(value: object) -> int | None:
    """A class index: an int, or text that is a whole number (``"3"``); else ``None``."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        return int(value)
    return None


def resolve_labels(
    values: Iterable[object], labels: Sequence[str], *, where: str
) -> dict[object, int]:
    """Each distinct label value's class index: an int is an index, text a class name.

    Raises:
        InputError: An index out of range, or names matching no label (all of them named).
    """
    distinct = set(values)
    out_of_range = sorted(
        i for i in (_as_index(v) for v in distinct) if i is not None and not 0 <= i < len(labels)
    )
    if out_of_range:
        raise InputError(
            f"{where}: class index(es) {', '.join(map(str, out_of_range[:5]))} out of range; "
            f"expected 0 to {len(labels) - 1} ({len(labels)} labels)"
        )
    names = sorted(str(v) for v in distinct if _as_index(v) is None)
    matched = match_names(names, labels, noun=f"{where}: label", expected="class names")
    return {v: _as_index(v) if _as_index(v) is not None else matched[str(v)] for v in distinct}


def class_index(value: object, labels: Sequence[str]) -> int:
    """One label value's class index, as :func:`resolve_labels` gives it, for one sample.

    Raises:
        InputError: No value, an index out of range, or a name matching no single label.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        raise InputError("no label")
    index = _as_index(value)
    if index is not None:
        if 0 <= index < len(labels):
            return index
        raise InputError(f"class index {index} out of range 0 to {len(labels) - 1}")
    indices = _by_key(tuple(labels)).get(label_key(str(value)), []) if label_key(str(value)) else []
    if len(indices) == 1:
        return indices[0]
    if not indices:
        raise InputError(f"label {str(value)[:80]!r} matches no label of this model")
    raise InputError(f"label {value!r} matches {len(indices)} labels of this model")


def zip_member_problem(info: zipfile.ZipInfo, shown: str) -> str | None:
    """Why a member cannot be read, as told by the archive's directory (``None``: it can)."""
    if info.flag_bits & 0x1:
        return f"{shown}: cannot be read from the archive (encrypted)"
    if info.compress_type not in _READABLE_COMPRESSION:
        return (f"{shown}: cannot be read from the archive (compression method "
                f"{info.compress_type} is not supported)")  # fmt: skip
    if info.file_size > MAX_MEMBER_BYTES:
        return (f"{shown}: {info.file_size // 1_000_000} MB uncompressed; at most "
                f"{MAX_MEMBER_BYTES // 1_000_000} MB per image")  # fmt: skip
    return None


def zip_records(archive: zipfile.ZipFile, shard: Shard) -> Iterator[Record | str]:
    """A zip shard's records from an open archive, each member read when it is reached."""
    for offset, (shown, member, label) in enumerate(shard.items):
        try:
            info = archive.getinfo(member)
        except KeyError:
            yield f"{shown}: not in the archive"
            continue
        problem = zip_member_problem(info, shown)
        if problem:
            yield problem
            continue
        try:
            data = archive.read(info)
        except Exception as exc:  # corrupt data, a wrong CRC, a truncated archive
            yield f"{shown}: cannot be read from the archive ({type(exc).__name__})"
            continue
        yield Record(shard.index, offset, shown, label, data)


def _read_files(shard: Shard) -> Iterator[Record | str]:
    for offset, (shown, path, label) in enumerate(shard.items):
        if Path(path).is_file():
            yield Record(shard.index, offset, shown, label, Path(path))
        else:
            yield f"{shown}: no such file"


def _read_zip(shard: Shard) -> Iterator[Record | str]:
    try:
        archive = zipfile.ZipFile(shard.location)
    except (zipfile.BadZipFile, OSError) as exc:
        for shown, _, _ in shard.items:
            yield f"{shown}: cannot be read from the archive ({type(exc).__name__})"
        return
    with archive:
        yield from zip_records(archive, shard)


def parquet_columns(schema: object, name: str) -> tuple[str, str, bool]:
    """The image and label columns of a Parquet schema, and whether the image is a struct.

    The image is a binary column (``image``, ``img``, ``jpg``, ``png`` or ``bytes``) or,
    as Hugging Face datasets store it, a struct ``image`` with a ``bytes`` field.

    Raises:
        InputError: No such image column, or no ``label``/``labels`` column of ints or text.
    """
    import pyarrow as pa  # noqa: PLC0415  (pyarrow only when a Parquet set is read)

    def binary(kind: object) -> bool:
        return (
            pa.types.is_binary(kind)
            or pa.types.is_large_binary(kind)
            or (pa.types.is_binary_view(kind))
        )

    fields = {field.name: field.type for field in schema}  # type: ignore[attr-defined]
    image = next((c for c in _IMAGE_COLUMNS if c in fields and binary(fields[c])), None)
    struct = image is None and "image" in fields and pa.types.is_struct(fields["image"])
    if struct and fields["image"].get_field_index("bytes") >= 0:
        image = "image"
    struct = struct and image is not None

    def textual(kind: object) -> bool:
        if pa.types.is_dictionary(kind):
            kind = kind.value_type  # type: ignore[attr-defined]
        return (
            pa.types.is_integer(kind)
            or pa.types.is_string(kind)
            or (pa.types.is_large_string(kind) or pa.types.is_string_view(kind))
        )

    label = next((c for c in _LABEL_COLUMNS if c in fields and textual(fields[c])), None)
    if image is None or label is None:
        raise InputError(
            f"{name}: expected an image column (binary 'image', 'img', 'jpg', 'png' or "
            f"'bytes', or a struct 'image' with 'bytes') and a 'label' column of class "
            f"indices or names; found {', '.join(f'{c} ({t})' for c, t in fields.items())}"
        )
    return image, label, struct


def _read_parquet(shard: Shard) -> Iterator[Record | str]:
    import pyarrow.parquet as pq  # noqa: PLC0415  (pyarrow only when a Parquet set is read)

    path = Path(shard.location)
    with pq.ParquetFile(path) as file:
        image, label, struct = parquet_columns(file.schema_arrow, path.name)
        first = sum(file.metadata.row_group(g).num_rows for g in range(shard.row_group))
        offset = 0
        batches = file.iter_batches(
            batch_size=PARQUET_BATCH_ROWS, row_groups=[shard.row_group], columns=[image, label]
        )
        for batch in batches:
            images, values = batch.column(image), batch.column(label)
            if struct:
                images = images.field("bytes")
            for row in range(batch.num_rows):
                shown = f"{path.name}:{first + offset}"
                data, value = images[row].as_py(), values[row].as_py()
                try:
                    if data is None:
                        raise InputError("no image bytes")
                    index = class_index(value, shard.labels)
                except InputError as exc:
                    yield f"{shown}: {exc}"
                else:
                    yield Record(shard.index, offset, shown, index, data)
                offset += 1


def _samples(stream: tarfile.TarFile) -> Iterator[tuple[str, dict[str, bytes | int]]]:
    """WebDataset samples: consecutive members sharing a key (``dir/name`` up to the first dot).

    Each field maps to its bytes, or to its size when it is too large to read.
    """
    key, fields = None, {}
    for member in stream:
        path = PurePosixPath(member.name)
        if (
            not member.isfile()
            or "." not in path.name
            or any(p.startswith(".") or p == "__MACOSX" for p in path.parts)
        ):
            continue
        stem, field = path.name.split(".", 1)
        this = str(path.parent / stem) if path.parent != PurePosixPath(".") else stem
        if this != key:
            if key is not None:
                yield key, fields
            key, fields = this, {}
        field = field.lower()
        wanted = field.rsplit(".", 1)[-1] in IMAGE_EXTENSIONS or field in ("cls", "txt", "json")
        if not wanted:
            continue  # captions, embeddings: never read
        if member.size > MAX_MEMBER_BYTES:
            fields[field] = member.size
            continue
        handle = stream.extractfile(member)
        fields[field] = handle.read() if handle else b""
    if key is not None:
        yield key, fields


def _tar_label(fields: dict[str, bytes | int], labels: tuple[str, ...]) -> int:
    """The class index of a sample: ``.cls`` (an index), ``.json`` (``{"label": ...}``), ``.txt``.

    Raises:
        InputError: No label member, or one that gives no single class.
    """
    for field in ("cls", "json", "txt"):
        data = fields.get(field)
        if data is None:
            continue
        if isinstance(data, int):
            raise InputError(f".{field} of {data // 1_000_000} MB is not a label")
        text = data.decode("utf-8", errors="replace").strip()
        if field == "cls" and _as_index(text) is None:
            raise InputError(f".cls holds {text[:40]!r}; expected a class index")
        if field == "json":
            try:
                value = json.loads(text)["label"]
            except (ValueError, TypeError, KeyError):
                raise InputError('.json has no "label"') from None
            return class_index(value, labels)
        return class_index(text, labels)
    raise InputError("no label (.cls, .txt or .json)")


def _tar_records(stream: tarfile.TarFile, shard: Shard) -> Iterator[Record | str]:
    for offset, (key, fields) in enumerate(_samples(stream)):
        image = next((f for f in fields if f.rsplit(".", 1)[-1] in IMAGE_EXTENSIONS), None)
        try:
            if image is None:
                raise InputError(f"no image (.{', .'.join(IMAGE_EXTENSIONS)})")
            data = fields[image]
            if isinstance(data, int):
                raise InputError(
                    f"{data // 1_000_000} MB; at most {MAX_MEMBER_BYTES // 1_000_000} MB per image"
                )
            label = _tar_label(fields, shard.labels)
        except InputError as exc:
            yield f"{key}: {exc}, skipped"
        else:
            yield Record(shard.index, offset, f"{key}.{image}", label, data)


def _read_tar(shard: Shard) -> Iterator[Record | str]:
    try:
        with tarfile.open(shard.location, "r|*") as stream:
            yield from _tar_records(stream, shard)
    except (tarfile.TarError, OSError, EOFError) as exc:  # not a tar, truncated, corrupt
        name = Path(shard.location).name
        yield f"{name}: cannot be read to its end ({type(exc).__name__}); the rest is skipped"


_READERS = {"files": _read_files, "zip": _read_zip, "parquet": _read_parquet, "tar": _read_tar}


def read_shard(shard: Shard) -> Iterator[Record | str]:
    """A :class:`Record` per usable image of ``shard``, in order, and a problem line per other.

    Opens the shard's files itself, so it runs in any process that sees them.

    Raises:
        InputError: An unknown shard kind, or a zip shard held in memory (no location).
    """
    if shard.kind not in _READERS:
        raise InputError(
            f"Expected shard kind to be one of {sorted(_READERS)}. Received: kind={shard.kind!r}"
        )
    if shard.kind == "zip" and not shard.location:
        raise InputError(
            f"shard {shard.index} is a zip held in memory; read it with LabelledSet.records()"
        )
    return _READERS[shard.kind](shard)
