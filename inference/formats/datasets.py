"""Labelled image sets: the images a model is scored on, read as a stream.

:func:`open_labelled` opens five kinds of source and tells them apart by what
the path is:

- a folder with one sub-folder per class, as Keras' ``flow_from_directory`` reads it;
- the same layout in a zip archive (from a path, or uploaded bytes: :func:`scan_zip`);
- a CSV manifest of ``path,label`` rows (:func:`scan_csv`);
- Parquet: a file, or a folder of ``*.parquet`` files, with encoded images and a label
  column, as Hugging Face datasets store them (:func:`scan_parquet`);
- WebDataset tar shards: a ``.tar`` file, or a folder of them (:func:`scan_tar`).

Class names match the model's labels ignoring case and punctuation
(``t_shirt_top`` matches ``T-shirt/top``); in a manifest, Parquet or tar, a label
written as a whole number is a class index. A name that matches no label stops
with a clear error; an unusable image (a missing file, a corrupt member, a sample
without a label) is one problem line, and the rest is still read.

Opening reads a directory, a manifest or Parquet metadata and labels, never
pixels: a :class:`LabelledSet` (:mod:`inference.formats.labelled`) is a tuple of
:class:`Shard` values that :func:`read_shard` (:mod:`inference.formats.shards`)
reads in any process, one image at a time. No name inside an archive ever becomes
a path on the server.
"""

from __future__ import annotations

import csv
import io
import tarfile
import zipfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from inference.core.errors import InputError
from inference.core.specs import ModelSpec
from inference.formats.labelled import (
    IMAGES_PER_SHARD,
    LabelledImage,
    LabelledSet,
    ZipMember,
    listed_set,
)
from inference.formats.shards import (
    _READABLE_COMPRESSION,  # noqa: F401  (re-exported: evaluate.py and its callers import it)
    MAX_MEMBER_BYTES,
    Record,
    Shard,
    label_key,
    match_names,
    parquet_columns,
    read_shard,
    resolve_labels,
    zip_member_problem,
)

__all__ = [
    "BATCH_SIZE",
    "IMAGES_PER_SHARD",
    "MAX_MEMBER_BYTES",
    "MAX_UPLOAD_IMAGES",
    "MAX_ZIP_BYTES",
    "MAX_ZIP_MEMBERS",
    "LabelledImage",
    "LabelledSet",
    "Record",
    "Shard",
    "ZipMember",
    "label_key",
    "labelled_set",
    "open_labelled",
    "read_shard",
    "scan_csv",
    "scan_folder",
    "scan_parquet",
    "scan_tar",
    "scan_zip",
]

MAX_ZIP_MEMBERS = 20_000
"""Images in a set read from disk (the command line), when the count is known on opening."""
MAX_UPLOAD_IMAGES = 2_000
"""Images in a labelled zip uploaded to a page."""
MAX_ZIP_BYTES = 300_000_000
"""Uncompressed size of an uploaded zip (the command line has no total limit)."""
BATCH_SIZE = 64
"""Images decoded, preprocessed and run at a time: what a labelled set holds in memory."""


def _too_many(name: str, count: int, max_images: int) -> InputError:
    where = (
        f"; the command line (`python -m inference evaluate` or `autoquant`) takes up to "
        f"{MAX_ZIP_MEMBERS}"
        if max_images < MAX_ZIP_MEMBERS
        else ""
    )
    return InputError(f"{name}: {count} images; at most {max_images} are accepted{where}")


def _match_folders(names: Sequence[str], labels: Sequence[str]) -> dict[str, int]:
    return match_names(names, labels)


def scan_folder(
    root: str | Path, labels: Sequence[str], *, max_images: int | None = None
) -> LabelledSet:
    """Read a labelled folder: one sub-folder per class (files listed, not read).

    Raises:
        InputError: ``root`` is not a folder, has no class folders, a folder
            matches no label, no image was found at all, or over ``max_images``.
    """
    given, root = Path(root), Path(root).absolute()  # shards name files for any process's cwd
    if not root.is_dir():
        raise InputError(f"{given}: expected a folder with one sub-folder per class")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise InputError(f"{given}: expected one sub-folder per class; found none")
    matched = _match_folders([f.name for f in folders], labels)
    items, problems = [], []
    for stray in sorted(p for p in root.iterdir() if p.is_file()):
        problems.append(f"{stray.name}: not in a class folder, skipped")
    for folder in folders:
        files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
        if not files:
            problems.append(f"{folder.name}/: empty folder")
        for path in files:
            shown = f"{folder.name}/{path.relative_to(folder)}"
            items.append((shown, str(path), matched[folder.name]))
    if not items:
        raise InputError(f"{given}: no images found in its class folders")
    if max_images is not None and len(items) > max_images:
        raise _too_many(root.name, len(items), max_images)
    return listed_set(root.name, "files", "", labels, items, problems)


def _hidden(parts: Sequence[str]) -> bool:
    return any(p.startswith(".") or p == "__MACOSX" for p in parts)


def _member_parts(member: zipfile.ZipInfo) -> list[str]:
    return [p for p in PurePosixPath(member.filename).parts if p not in ("", ".", "..")]


def scan_zip(
    data: bytes | Path,
    labels: Sequence[str],
    *,
    name: str | None = None,
    max_images: int = MAX_ZIP_MEMBERS,
    max_bytes: int | None = None,
) -> LabelledSet:
    """Read a labelled set's layout from a zip archive (``class/file`` members).

    Only the archive's directory is read here; each member is read when its
    image is used. ``data`` is the archive in memory (an upload: the set is not
    :attr:`~LabelledSet.portable`) or its path (read from disk as needed).
    ``name`` defaults to the file's name (``archive.zip`` for bytes).

    Raises:
        InputError: Not a zip, over ``max_images`` files or ``max_bytes``
            uncompressed, or the layout does not match the labels.
    """
    in_memory = isinstance(data, bytes)
    name = name or ("archive.zip" if in_memory else Path(data).name)
    try:
        archive = zipfile.ZipFile(io.BytesIO(data) if in_memory else data)
    except (zipfile.BadZipFile, OSError):
        raise InputError(f"{name}: not a zip archive") from None
    with archive:
        members = [m for m in archive.infolist() if not m.is_dir()]
    members = [m for m in members if not _hidden(_member_parts(m))]
    if len(members) > max_images:
        raise _too_many(name, len(members), max_images)
    if max_bytes is not None and sum(m.file_size for m in members) > max_bytes:
        raise InputError(f"{name}: more than {max_bytes // 1_000_000} MB uncompressed")
    grouped: dict[str, list[zipfile.ZipInfo]] = {}
    problems = []
    for member in members:
        parts = _member_parts(member)
        if len(parts) < 2:
            problems.append(f"{member.filename}: not in a class folder, skipped")
            continue
        # A single top folder wrapping the classes is common: use the innermost folder.
        grouped.setdefault(parts[-2], []).append(member)
    if not grouped:
        raise InputError(f"{name}: expected class folders with images inside; found none")
    matched = _match_folders(sorted(grouped), labels)
    items = []
    for folder in sorted(grouped):
        for member in sorted(grouped[folder], key=lambda m: m.filename):
            shown = f"{folder}/{PurePosixPath(member.filename).name}"
            # What the directory tells is reported now; corrupt data when it is read.
            problem = zip_member_problem(member, shown)
            if problem:
                problems.append(problem)
            else:
                items.append((shown, member.filename, matched[folder]))
    location = "" if in_memory else str(Path(data).absolute())
    archived = data if isinstance(data, bytes) else None
    return listed_set(name, "zip", location, labels, items, problems, archive=archived)


_PATH_HEADERS = ("path", "file", "filename", "file_name", "image", "image_path", "filepath")
_LABEL_HEADERS = ("label", "labels", "class", "class_name", "category")


def _is_header(row: Sequence[str], folder: Path, labels: Sequence[str]) -> bool:
    """A first row whose label is no class and whose path is no file (a typo stays a row)."""
    if len(row) < 2 or (folder / row[0].strip()).is_file():
        return False
    try:
        resolve_labels([row[1].strip()], labels, where="header")
    except InputError:
        return True
    return False


def scan_csv(
    path: str | Path, labels: Sequence[str], *, max_images: int = MAX_ZIP_MEMBERS
) -> LabelledSet:
    """Read a CSV manifest of ``path,label`` rows (files listed, not read).

    A first row whose label is neither a class index nor a class name is a header
    (its ``path``/``file``… and ``label``/``class``… columns are used, else the
    first two). Relative paths resolve against the CSV's folder; paths are
    trusted like a folder given on the command line. A row whose file is missing
    is a problem; a label matching no class stops.

    Raises:
        InputError: Not readable as CSV, no rows, over ``max_images`` rows, or a
            label that is out of range or matches no class (all of them named).
    """
    path = Path(path).absolute()
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = [(n, row) for n, row in enumerate(csv.reader(handle), 1) if any(row)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path.name}: cannot be read as CSV ({type(exc).__name__})") from None
    columns, problems = (0, 1), []
    if rows and _is_header(rows[0][1], path.parent, labels):
        header = [cell.strip().casefold() for cell in rows[0][1]]
        pick = [next((header.index(h) for h in names if h in header), default)
                for names, default in ((_PATH_HEADERS, 0), (_LABEL_HEADERS, 1))]  # fmt: skip
        columns, rows = (pick[0], pick[1]), rows[1:]
    listed = []
    for line, row in rows:
        if len(row) <= max(columns) or not row[columns[0]].strip():
            problems.append(f"{path.name} line {line}: expected path,label; skipped")
        elif not row[columns[1]].strip():
            problems.append(f"{row[columns[0]].strip()}: no label (line {line}), skipped")
        else:
            listed.append((line, row[columns[0]].strip(), row[columns[1]].strip()))
    if not listed:
        raise InputError(f"{path.name}: expected rows of path,label; found none")
    if len(listed) > max_images:
        raise _too_many(path.name, len(listed), max_images)
    index = resolve_labels((label for _, _, label in listed), labels, where=path.name)
    items = []
    for line, shown, label in listed:
        file = path.parent / shown
        if file.is_file():
            items.append((shown, str(file), index[label]))
        else:
            problems.append(f"{shown}: no such file (line {line}), skipped")
    return listed_set(path.name, "files", "", labels, items, problems)


def _files(path: Path, suffix: str) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.glob(f"*{suffix}") if p.is_file() and p.name[0] != ".")


def scan_parquet(
    path: str | Path, labels: Sequence[str], *, max_images: int = MAX_ZIP_MEMBERS
) -> LabelledSet:
    """Read Parquet files' layout: one shard per row group (metadata and labels read, no image).

    Raises:
        InputError: Not Parquet, no image or label column, no rows, over
            ``max_images`` rows, or a label out of range or matching no class.
    """
    import pyarrow.parquet as pq  # noqa: PLC0415  (pyarrow only when a Parquet set is read)

    path = Path(path).absolute()
    files, total = _files(path, ".parquet"), 0
    for file in files:  # the metadata first: a set over the limit reads nothing more
        try:
            with pq.ParquetFile(file) as reader:
                parquet_columns(reader.schema_arrow, file.name)
                total += reader.metadata.num_rows
        except InputError:
            raise
        except Exception as exc:  # pyarrow raises ArrowInvalid, OSError and more
            raise InputError(f"{file.name}: not a Parquet file ({type(exc).__name__})") from None
    if not total:
        raise InputError(f"{path.name}: expected Parquet rows of images and labels; found none")
    if total > max_images:
        raise _too_many(path.name, total, max_images)
    shards, values = [], set()
    for file in files:
        with pq.ParquetFile(file) as reader:
            _, label, _ = parquet_columns(reader.schema_arrow, file.name)
            for group in range(reader.metadata.num_row_groups):
                column = reader.read_row_group(group, columns=[label]).column(0)
                values.update(v for v in column.unique().to_pylist() if v is not None)
                rows = reader.metadata.row_group(group).num_rows
                shards.append(
                    Shard(len(shards), "parquet", str(file), tuple(labels), (), group, rows)
                )
    resolve_labels(values, labels, where=path.name)
    return LabelledSet(path.name, tuple(shards), (), total)


def scan_tar(path: str | Path, labels: Sequence[str]) -> LabelledSet:
    """WebDataset shards: a ``.tar`` file or a folder of them, one shard per file.

    Only each file's first header is read, so the count is unknown (``None``) and
    ``max_images`` does not apply; labels are matched as samples are read, and a
    sample whose label matches no class is a problem line.

    Raises:
        InputError: A file is not a tar archive.
    """
    path = Path(path).absolute()
    files = _files(path, ".tar")
    if not files:
        raise InputError(f"{path.name}: expected WebDataset .tar shards; found none")
    for file in files:
        try:
            with tarfile.open(file, "r|*") as stream:
                stream.next()
        except (tarfile.TarError, OSError, EOFError):
            raise InputError(f"{file.name}: not a tar archive") from None
    shards = tuple(Shard(n, "tar", str(f), tuple(labels)) for n, f in enumerate(files))
    return LabelledSet(path.name, shards)


def open_labelled(
    path: str | Path, labels: Sequence[str], *, max_images: int = MAX_ZIP_MEMBERS
) -> LabelledSet:
    """A labelled set from a folder, ``.zip``, ``.csv``, ``.parquet`` or ``.tar`` path.

    A folder with class sub-folders is read as such; one holding only ``*.parquet``
    (or only ``*.tar``) files is a Parquet (or WebDataset) set. ``max_images``
    applies wherever the count is known on opening (all but tar).

    Raises:
        InputError: The path does not exist or is none of these, or its source is unusable.
    """
    path = Path(path)
    if path.is_dir():
        entries = [p for p in path.iterdir() if not p.name.startswith(".")]
        suffixes = {p.suffix.lower() for p in entries if p.is_file()}
        if any(p.is_dir() for p in entries):
            return scan_folder(path, labels, max_images=max_images)
        if suffixes == {".parquet"}:
            return scan_parquet(path, labels, max_images=max_images)
        if suffixes == {".tar"}:
            return scan_tar(path, labels)
        raise InputError(
            f"{path}: expected one sub-folder per class, *.parquet files or *.tar shards; "
            f"found {len(entries)} file(s) of other kinds"
        )
    suffix = path.suffix.lower()
    if not path.is_file():
        raise InputError(f"{path}: no such file or folder")
    if suffix == ".zip":
        return scan_zip(path, labels, name=path.name, max_images=max_images)
    if suffix == ".csv":
        return scan_csv(path, labels, max_images=max_images)
    if suffix == ".parquet":
        return scan_parquet(path, labels, max_images=max_images)
    if suffix == ".tar":
        return scan_tar(path, labels)
    raise InputError(
        f"{path.name}: expected a folder or a .zip, .csv, .parquet or .tar file; "
        f"received {suffix or 'no extension'!r}"
    )


def labelled_set(spec: ModelSpec, archive: bytes | None, name: str = "archive.zip") -> LabelledSet:
    """An uploaded labelled zip (at most :data:`MAX_UPLOAD_IMAGES`), else the model's sample.

    Raises:
        InputError: No archive and no bundled sample, or the archive is unusable.
    """
    if archive is not None:
        return scan_zip(
            archive, spec.labels, name=name, max_images=MAX_UPLOAD_IMAGES, max_bytes=MAX_ZIP_BYTES
        )
    if spec.labelled_sample is not None:
        return scan_folder(spec.labelled_sample, spec.labels)
    raise InputError(f"upload a labelled zip for {spec.title}")
