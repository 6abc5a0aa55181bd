"""Accuracy of every variant on a labelled image set.

A labelled set is a folder with one sub-folder per class, as Keras'
``flow_from_directory`` reads it, or the same layout inside a zip archive.
Folder names match the model's labels ignoring case and punctuation
(``t_shirt_top`` matches ``T-shirt/top``, ``tiger_cat`` matches ``tiger cat``).
A folder that matches no label stops the evaluation with a clear error; an
empty folder or a file that is not an image is reported by name and the rest
is still evaluated.

Zip archives are read in memory, member by member: nothing is extracted, so no
name inside an archive ever becomes a path on the server.
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

from inference.errors import InputError
from inference.preprocess import decode_image, preprocess
from inference.runners import Runner
from inference.specs import AnyVariant, ModelSpec, Variant

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
MAX_ZIP_BYTES = 300_000_000
"""Uncompressed; members are read into memory (never extracted to disk)."""
BATCH_SIZE = 64


def label_key(name: str) -> str:
    """Compare class names ignoring case and punctuation: ``T-shirt/top`` -> ``tshirttop``."""
    return re.sub(r"[\W_]+", "", name.casefold())


@dataclass(frozen=True)
class LabelledImage:
    name: str
    """Shown in reports: ``class_folder/file``."""
    source: Path | bytes
    label: int


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


def scan_zip(data: bytes, labels: Sequence[str], *, name: str = "archive.zip") -> LabelledSet:
    """Read a labelled set from a zip archive in memory (``class/file`` members).

    Raises:
        InputError: Not a zip, too large, or the layout does not match the labels.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise InputError(f"{name}: not a zip archive") from None
    members = [m for m in archive.infolist() if not m.is_dir()]
    if len(members) > MAX_ZIP_MEMBERS:
        raise InputError(f"{name}: {len(members)} files; at most {MAX_ZIP_MEMBERS} are accepted")
    if sum(m.file_size for m in members) > MAX_ZIP_BYTES:
        raise InputError(f"{name}: more than {MAX_ZIP_BYTES // 1_000_000} MB uncompressed")
    grouped: dict[str, list[zipfile.ZipInfo]] = {}
    problems = []
    for member in members:
        parts = [p for p in PurePosixPath(member.filename).parts if p not in ("", ".", "..")]
        if any(p.startswith(".") or p == "__MACOSX" for p in parts):
            continue
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
            try:
                data = archive.read(member)
            except Exception as exc:  # encrypted, unsupported compression, corrupt data
                problems.append(f"{shown}: cannot be read from the archive ({type(exc).__name__})")
                continue
            images.append(LabelledImage(shown, data, matched[folder]))
    return LabelledSet(tuple(images), tuple(problems))


def labelled_set(spec: ModelSpec, archive: bytes | None, name: str = "archive.zip") -> LabelledSet:
    """An uploaded labelled zip, else the labelled sample the model ships with.

    Raises:
        InputError: No archive and no bundled sample, or the archive is unusable.
    """
    if archive is not None:
        return scan_zip(archive, spec.labels, name=name)
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
