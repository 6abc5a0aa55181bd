"""A labelled image set: its shards, the records read from them, and its listing.

Opened by :mod:`inference.formats.datasets`; this module holds what every source
gives: a tuple of :class:`~inference.formats.shards.Shard` values read one after
the other (or by workers), and, for sets listed on opening (a folder, a zip, a
CSV manifest), the listing as :class:`LabelledImage` values whose bytes are read
on use.
"""

from __future__ import annotations

import dataclasses
import io
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from inference.core.errors import InputError
from inference.formats.shards import Record, Shard, read_shard, zip_records

__all__ = [
    "IMAGES_PER_SHARD",
    "LabelledImage",
    "LabelledSet",
    "ZipMember",
    "listed_set",
    "slice_listing",
]

IMAGES_PER_SHARD = 256
"""Files or zip members per shard (a Parquet row group or a tar file is one shard)."""
_LISTED = ("files", "zip")
"""Shard kinds whose images are listed on opening: they have :attr:`LabelledSet.images`."""


@dataclass(frozen=True)
class ZipMember:
    """A member of an open archive, read when its image is used."""

    archive: zipfile.ZipFile = field(repr=False, compare=False)
    info: zipfile.ZipInfo

    def read(self, shown: str) -> bytes:
        """The member's bytes.

        Raises:
            InputError: The data is corrupt (or cannot be read for another reason).
        """
        try:
            return self.archive.read(self.info)
        except Exception as exc:  # corrupt data, a wrong CRC, a truncated archive
            raise InputError(
                f"{shown}: cannot be read from the archive ({type(exc).__name__})"
            ) from None


@dataclass(frozen=True)
class LabelledImage:
    name: str
    """Shown in reports: ``class_folder/file``."""
    location: Path | ZipMember
    label: int

    @property
    def source(self) -> Path | bytes:
        """The file, or the zip member's bytes read now (a set never holds every image).

        Raises:
            InputError: A zip member cannot be read.
        """
        if isinstance(self.location, ZipMember):
            return self.location.read(self.name)
        return self.location


@dataclass(frozen=True)
class LabelledSet:
    """A labelled image source cut into shards, and what could not be used on opening.

    :meth:`records` streams every shard in order. :attr:`images` and :attr:`classes`
    exist for the sets listed on opening (folder, zip, CSV); a Parquet or tar set
    is only streamed. Picklable: an open archive is not part of the state.
    """

    name: str
    shards: tuple[Shard, ...]
    problems: tuple[str, ...] = ()
    """Found on opening; reading adds its own (:meth:`records`)."""
    count: int | None = None
    """Images listed (``None`` for tar shards, whose samples are counted by reading them)."""
    portable: bool = True
    """Every shard can be read by another process from its paths (not a zip given as bytes)."""
    _archive: bytes | None = field(default=None, repr=False, compare=False)
    """The zip's bytes when it was given in memory: its shards are read from here."""
    _opened: list[zipfile.ZipFile] = field(default_factory=list, repr=False, compare=False)
    """That archive, opened once (its directory parsed once) and shared by resharded copies."""

    def records(self) -> Iterator[Record | str]:
        """Every shard's records in order, and a problem line per image that cannot be used.

        In this process a zip's directory is read once for all its shards (a worker given
        one shard by :func:`~inference.formats.shards.read_shard` reads it for that shard).
        """
        if self._archive is not None:
            for shard in self.shards:
                yield from self.read(shard)
            return
        try:
            archive = self._zip()
        except (zipfile.BadZipFile, OSError):
            archive = None  # gone since it was opened: each shard reports its images
        if archive is None:
            for shard in self.shards:
                yield from read_shard(shard)
            return
        with archive:
            for shard in self.shards:
                yield from zip_records(archive, shard)

    def read(self, shard: Shard) -> Iterator[Record | str]:
        """One shard's records read in this process, a zip held in memory included."""
        if self._archive is None:
            yield from read_shard(shard)
            return
        archive = self._zip()
        assert archive is not None
        yield from zip_records(archive, shard)

    def _zip(self) -> zipfile.ZipFile | None:
        if self._archive is not None:
            if not self._opened:  # one directory parse, shared with the listing
                self._opened.append(zipfile.ZipFile(io.BytesIO(self._archive)))
            return self._opened[0]
        if any(shard.kind == "zip" for shard in self.shards):
            return zipfile.ZipFile(self.shards[0].location)
        return None

    @cached_property
    def images(self) -> tuple[LabelledImage, ...]:
        """Every listed image, each read when its :attr:`LabelledImage.source` is used.

        Raises:
            InputError: A Parquet or tar set, which is only read as :meth:`records`.
        """
        self._listed("images")
        archive = self._zip()  # kept open by the members, as long as the listing lives
        return tuple(
            LabelledImage(
                shown,
                Path(where) if archive is None else ZipMember(archive, archive.getinfo(where)),
                label,
            )
            for shard in self.shards
            for shown, where, label in shard.items
        )

    @property
    def classes(self) -> tuple[int, ...]:
        """The class indices listed (folder, zip and CSV sets).

        Raises:
            InputError: A Parquet or tar set, whose classes are known by reading it.
        """
        self._listed("classes")
        return tuple(sorted({label for s in self.shards for _, _, label in s.items}))

    def with_shard_size(self, images_per_shard: int) -> LabelledSet:
        """The same set with its listing cut every ``images_per_shard`` images.

        A Parquet set keeps one shard per row group, a tar set one per file.
        """
        if images_per_shard < 1:
            raise InputError(f"expected at least 1 image per shard; received {images_per_shard}")
        if not self.shards or any(s.kind not in _LISTED for s in self.shards):
            return self
        first = self.shards[0]
        items = tuple(item for shard in self.shards for item in shard.items)
        shards = slice_listing(first.kind, first.location, first.labels, items, images_per_shard)
        return dataclasses.replace(self, shards=shards)

    def _listed(self, what: str) -> None:
        streamed = sorted({s.kind for s in self.shards} - set(_LISTED))
        if streamed:
            raise InputError(
                f"{self.name}: a {streamed[0]} set has no {what} listed on opening; "
                f"it is read as a stream: use records()"
            )

    def __getstate__(self) -> dict[str, object]:
        # The listing and the opened archive hold open files: rebuilt on use, never pickled.
        state = {k: v for k, v in self.__dict__.items() if k != "images"}
        state["_opened"] = []
        return state


def slice_listing(
    kind: str,
    location: str,
    labels: Sequence[str],
    items: Sequence[tuple[str, str, int]],
    size: int,
) -> tuple[Shard, ...]:
    """Shards of ``size`` items each, numbered from 0, in the listing's order."""
    chunks = [tuple(items[start : start + size]) for start in range(0, len(items), size)]
    return tuple(
        Shard(n, kind, location, tuple(labels), chunk, count=len(chunk))
        for n, chunk in enumerate(chunks)
    )


def listed_set(
    name: str,
    kind: str,
    location: str,
    labels: Sequence[str],
    items: Sequence[tuple[str, str, int]],
    problems: Sequence[str],
    *,
    archive: bytes | None = None,
) -> LabelledSet:
    """A folder, zip or CSV set: shards of :data:`IMAGES_PER_SHARD` items, listed now.

    The listing (:attr:`LabelledSet.images`) is made on opening, as the directory
    is read, so that a pass over the set later allocates nothing for it.
    """
    shards = slice_listing(kind, location, labels, items, IMAGES_PER_SHARD)
    dataset = LabelledSet(name, shards, tuple(problems), len(items), archive is None, archive)
    _ = dataset.images
    return dataset
