"""Accuracy of every variant on a labelled image set.

A labelled set is a folder with one sub-folder per class, as Keras'
``flow_from_directory`` reads it, or the same layout inside a zip archive.
Folder names match the model's labels ignoring case and punctuation
(``t_shirt_top`` matches ``T-shirt/top``, ``tiger_cat`` matches ``tiger cat``).
A folder that matches no label stops the evaluation with a clear error; an
empty folder or a file that is not an image is reported by name and the rest
is still evaluated.

Zip archives are read member by member, each when its image is used (never all
at once): nothing is extracted, so no name inside an archive ever becomes a path
on the server, and a set of 20 000 images costs its directory, not its pixels.
"""

from __future__ import annotations

import io
import re
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from inference.core.errors import InputError
from inference.core.specs import AnyVariant, ModelSpec, Variant
from inference.engine.runners import Runner
from inference.formats.images import decode_image, preprocess

__all__ = [
    "Evaluation",
    "LabelledSet",
    "VariantScore",
    "evaluate",
    "label_key",
    "scan_folder",
    "scan_zip",
]

MAX_ZIP_MEMBERS = 20_000
"""Images in a labelled zip read from disk (the command line)."""
MAX_UPLOAD_IMAGES = 2_000
"""Images in a labelled zip uploaded to a page."""
MAX_ZIP_BYTES = 300_000_000
"""Uncompressed size of an uploaded zip (the command line has no total limit)."""
MAX_MEMBER_BYTES = 100_000_000
"""Uncompressed size of one member: each is read into memory on its own, when it is used."""
BATCH_SIZE = 64
"""Images decoded, preprocessed and run at a time: what a labelled set holds in memory."""
_READABLE_COMPRESSION = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2,
                         zipfile.ZIP_LZMA}  # fmt: skip


def label_key(name: str) -> str:
    """Compare class names ignoring case and punctuation: ``T-shirt/top`` -> ``tshirttop``."""
    return re.sub(r"[\W_]+", "", name.casefold())


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
    """Images with their true class index, and what could not be used."""

    images: tuple[LabelledImage, ...]
    problems: tuple[str, ...] = ()

    @property
    def classes(self) -> tuple[int, ...]:
        return tuple(sorted({image.label for image in self.images}))


def _match_folders(names: Sequence[str], labels: Sequence[str]) -> dict[str, int]:
    by_key: dict[str, list[int]] = {}
    for index, label in enumerate(labels):
        by_key.setdefault(label_key(label), []).append(index)
    matched, unmatched = {}, []
    for name in names:
        indices = by_key.get(label_key(name), []) if label_key(name) else []
        if not indices:
            unmatched.append(name)
        elif len(indices) > 1:
            raise InputError(
                f"class folder {name!r} matches {len(indices)} labels of this model "
                f"(indices {', '.join(map(str, indices))}); it cannot be scored unambiguously"
            )
        else:
            matched[name] = indices[0]
    if unmatched:
        examples = ", ".join(repr(label) for label in labels[:4])
        raise InputError(
            f"class folder(s) {', '.join(repr(n) for n in sorted(unmatched))} match no label of "
            f"this model; expected folder names like {examples} (case and punctuation ignored)"
        )
    return matched


def scan_folder(root: str | Path, labels: Sequence[str]) -> LabelledSet:
    """Read a labelled folder: one sub-folder per class.

    Raises:
        InputError: ``root`` is not a folder, has no class folders, a folder
            matches no label, or no image was found at all.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: expected a folder with one sub-folder per class")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise InputError(f"{root}: expected one sub-folder per class; found none")
    matched = _match_folders([f.name for f in folders], labels)
    images, problems = [], []
    for stray in sorted(p for p in root.iterdir() if p.is_file()):
        problems.append(f"{stray.name}: not in a class folder, skipped")
    for folder in folders:
        files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
        if not files:
            problems.append(f"{folder.name}/: empty folder")
        for path in files:
            images.append(
                LabelledImage(
                    f"{folder.name}/{path.relative_to(folder)}", path, matched[folder.name]
                )
            )
    if not images:
        raise InputError(f"{root}: no images found in its class folders")
    return LabelledSet(tuple(images), tuple(problems))


def _hidden(parts: Sequence[str]) -> bool:
    return any(p.startswith(".") or p == "__MACOSX" for p in parts)


def _member_parts(member: zipfile.ZipInfo) -> list[str]:
    return [p for p in PurePosixPath(member.filename).parts if p not in ("", ".", "..")]


def scan_zip(
    data: bytes | Path,
    labels: Sequence[str],
    *,
    name: str = "archive.zip",
    max_images: int = MAX_ZIP_MEMBERS,
    max_bytes: int | None = None,
) -> LabelledSet:
    """Read a labelled set's layout from a zip archive (``class/file`` members).

    Only the archive's directory is read here; each member is read when its
    image is used (:attr:`LabelledImage.source`). ``data`` is the archive in
    memory (an upload) or its path (read from disk as needed).

    Raises:
        InputError: Not a zip, over ``max_images`` files or ``max_bytes``
            uncompressed, or the layout does not match the labels.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data) if isinstance(data, bytes) else data)
    except (zipfile.BadZipFile, OSError):
        raise InputError(f"{name}: not a zip archive") from None
    members = [m for m in archive.infolist() if not m.is_dir() and not _hidden(_member_parts(m))]
    if len(members) > max_images:
        where = (
            f"; the command line (`python -m inference evaluate` or `autoquant`) takes up to "
            f"{MAX_ZIP_MEMBERS}"
            if max_images < MAX_ZIP_MEMBERS
            else ""
        )
        raise InputError(f"{name}: {len(members)} images; at most {max_images} are accepted{where}")
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
    images = []
    for folder in sorted(grouped):
        for member in sorted(grouped[folder], key=lambda m: m.filename):
            shown = f"{folder}/{PurePosixPath(member.filename).name}"
            # What can be told from the directory is reported now; corrupt data when read.
            if member.flag_bits & 0x1:
                problems.append(f"{shown}: cannot be read from the archive (encrypted)")
            elif member.compress_type not in _READABLE_COMPRESSION:
                problems.append(f"{shown}: cannot be read from the archive (compression "
                                f"method {member.compress_type} is not supported)")  # fmt: skip
            elif member.file_size > MAX_MEMBER_BYTES:
                problems.append(f"{shown}: {member.file_size // 1_000_000} MB uncompressed; at "
                                f"most {MAX_MEMBER_BYTES // 1_000_000} MB per image")  # fmt: skip
            else:
                images.append(LabelledImage(shown, ZipMember(archive, member), matched[folder]))
    return LabelledSet(tuple(images), tuple(problems))


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


@dataclass(frozen=True)
class VariantScore:
    """How one variant did on the set."""

    variant: AnyVariant
    accuracy: float
    top5: float
    agreement: float | None
    """Share of images whose top-1 equals the reference variant's top-1."""
    per_class: dict[int, float]
    confusion: np.ndarray = field(repr=False)
    """Rows: true classes of the set; columns: the same classes plus "other"."""
    median_ms: float

    def as_row(self) -> dict[str, object]:
        return {
            "variant": self.variant.value,
            "accuracy": round(self.accuracy, 4),
            "top-5": round(self.top5, 4),
            "agreement": None if self.agreement is None else round(self.agreement, 4),
            "median ms": round(self.median_ms, 3),
        }


@dataclass(frozen=True)
class Evaluation:
    model: str
    reference: AnyVariant
    classes: tuple[int, ...]
    labels: tuple[str, ...]
    images: int
    scores: tuple[VariantScore, ...]
    problems: tuple[str, ...]

    def per_class_rows(self) -> list[dict[str, object]]:
        rows = []
        for index in self.classes:
            row: dict[str, object] = {"class": self.labels[index]}
            for score in self.scores:
                row[score.variant.value] = round(score.per_class[index], 4)
            rows.append(row)
        return rows

    def confusion_rows(self, variant: AnyVariant) -> list[dict[str, object]]:
        """Long-form confusion matrix: true class, predicted class, count."""
        score = next(s for s in self.scores if s.variant == variant)
        names = [self.labels[i] for i in self.classes] + ["other"]
        return [
            {"true": names[r], "predicted": names[c], "count": int(score.confusion[r, c])}
            for r in range(len(self.classes))
            for c in range(len(names))
        ]


def evaluate(
    spec: ModelSpec,
    runners: dict[AnyVariant, Runner],
    dataset: LabelledSet,
    *,
    progress: Callable[[str, float], None] | None = None,
) -> Evaluation:
    """Run every variant on every image of ``dataset`` and score them.

    Each image is decoded and preprocessed once and fed to every variant, so
    the variants see exactly the same inputs.

    Raises:
        InputError: None of the images could be decoded.
    """
    if not runners:
        raise InputError("expected at least one variant to evaluate; received none")
    problems = list(dataset.problems)
    reference = Variant.ORIGINAL if Variant.ORIGINAL in runners else next(iter(runners))
    top5_rows: dict[AnyVariant, list[np.ndarray]] = {v: [] for v in runners}
    per_image_ms: dict[AnyVariant, list[float]] = {v: [] for v in runners}
    truths: list[int] = []
    total = len(dataset.images)
    # Batch by batch: decode and preprocess once, run every variant, keep only the top-5,
    # so memory stays bounded by one batch whatever the size of the set.
    for start in range(0, total, BATCH_SIZE):
        inputs, labels = [], []
        for item in dataset.images[start : start + BATCH_SIZE]:
            try:
                image = decode_image(
                    item.source, name=item.name, color_mode=spec.preprocessing.color_mode
                )
            except InputError as exc:
                problems.append(str(exc))
                continue
            inputs.append(preprocess(image, spec.preprocessing)[0])
            labels.append(item.label)
        if not inputs:
            continue
        batch = np.stack(inputs)
        for variant, runner in runners.items():
            began = time.perf_counter()
            probabilities = runner.predict(batch)
            per_image_ms[variant].append((time.perf_counter() - began) * 1e3 / len(batch))
            top5_rows[variant].append(np.argsort(-probabilities, axis=1, kind="stable")[:, :5])
        truths.extend(labels)
        if progress:
            done = min(start + BATCH_SIZE, total)
            progress(f"evaluated {done}/{total} images", done / total)
    if not truths:
        raise InputError("none of the images could be read; " + "; ".join(problems[:3]))
    truth = np.asarray(truths)
    classes = tuple(sorted(set(truths)))
    top5_by_variant = {v: np.concatenate(rows) for v, rows in top5_rows.items()}
    times = {v: float(np.median(ms)) for v, ms in per_image_ms.items()}
    scores = []
    column = {index: i for i, index in enumerate(classes)}
    for variant, top5 in top5_by_variant.items():
        top1 = top5[:, 0]
        confusion = np.zeros((len(classes), len(classes) + 1), dtype=np.int64)
        for true, predicted in zip(truth, top1, strict=True):
            confusion[column[true], column.get(int(predicted), len(classes))] += 1
        per_class = {c: float(np.mean(top1[truth == c] == c)) for c in classes}
        agreement = (
            None
            if variant == reference
            else float(np.mean(top1 == top5_by_variant[reference][:, 0]))
        )
        scores.append(
            VariantScore(
                variant=variant,
                accuracy=float(np.mean(top1 == truth)),
                top5=float(np.mean((top5 == truth[:, None]).any(axis=1))),
                agreement=agreement,
                per_class=per_class,
                confusion=confusion,
                median_ms=times[variant],
            )
        )
    return Evaluation(
        model=spec.name,
        reference=reference,
        classes=classes,
        labels=spec.labels,
        images=len(truth),
        scores=tuple(scores),
        problems=tuple(problems),
    )
