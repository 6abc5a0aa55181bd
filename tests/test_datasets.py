"""Labelled image sets from five kinds of source, made of the same real photos.

The oracle is the set written: each source is built here from the same encoded
photos and labels, so every source must give back exactly those bytes, decoded
to exactly those pixels, with those class indices, in that order.
"""

from __future__ import annotations

import concurrent.futures
import io
import json
import multiprocessing
import pickle
import tarfile
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from inference.core.errors import InputError
from inference.formats.datasets import (
    LabelledSet,
    Record,
    Shard,
    open_labelled,
    read_shard,
    scan_zip,
)
from inference.formats.images import decode_image

LABELS = ("tabby cat", "espresso", "T-shirt/top")
PHOTOS = {"tabby_cat": "chelsea", "espresso": "coffee", "t_shirt_top": "astronaut"}
"""Class folder -> scikit-image photo; folders sort as espresso, t_shirt_top, tabby_cat."""
SIDE = 48
MEMORY_SET_BYTES = 40_000_000
MEMORY_ROW_GROUPS = 8
MAX_READ_SHARE = 2 / MEMORY_ROW_GROUPS
"""Peak memory while reading a Parquet file, as a share of its image bytes: under two of
its row groups (one row group and a batch of its rows; reading every row would be 100 %)."""


def _photo(name: str) -> np.ndarray:
    from skimage import data

    return getattr(data, name)()


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def samples() -> list[tuple[str, str, int, bytes, np.ndarray]]:
    """(folder, file, label, PNG bytes, pixels): two small views of each photo, in folder order."""
    found = []
    for folder in sorted(PHOTOS):
        photo = Image.fromarray(_photo(PHOTOS[folder])).convert("RGB")
        for view, image in enumerate((photo, photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT))):
            pixels = np.asarray(image.resize((SIDE, SIDE + view)))
            found.append((folder, f"{view}.png", _label(folder), _png(pixels), pixels))
    return found


def _label(folder: str) -> int:
    return {"tabby_cat": 0, "espresso": 1, "t_shirt_top": 2}[folder]


def _write_tar(path: Path, samples: list, first: int) -> None:
    """WebDataset shard; the label in turn as .cls (index), .txt (name), .json (name)."""
    with tarfile.open(path, "w") as tar:
        for n, (_, _, label, data, _) in enumerate(samples, first):
            key = f"photos/{n:06d}"
            kind = n % 3
            members = {f"{key}.png": data, f"{key}.caption.txt": b"a photo, not a label"}
            if kind == 0:
                members[f"{key}.cls"] = str(label).encode()
            elif kind == 1:
                members[f"{key}.txt"] = LABELS[label].upper().encode()
            else:
                members[f"{key}.json"] = json.dumps({"label": LABELS[label]}).encode()
            for name, payload in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))


@pytest.fixture(scope="module")
def source_root(samples: list, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same six photos as a folder, a zip, a CSV, Parquet (two ways) and tar shards."""
    root = tmp_path_factory.mktemp("sources")
    folder = root / "folder"
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        for name, file, _, data, _ in samples:
            (folder / name).mkdir(parents=True, exist_ok=True)
            (folder / name / file).write_bytes(data)
            zipped.writestr(f"set/{name}/{file}", data)  # a top folder wraps the classes
    (root / "set.zip").write_bytes(archive.getvalue())
    # The CSV has a header, paths relative to itself, and labels as names and as indices.
    rows = ["file,class"] + [
        f"folder/{name}/{file},{label if n % 2 else LABELS[label].title()}"
        for n, (name, file, label, _, _) in enumerate(samples)
    ]
    (root / "set.csv").write_text("\n".join(rows) + "\n")
    images, labels = [s[3] for s in samples], [s[2] for s in samples]
    table = pa.table({"image": pa.array(images, pa.binary()), "label": pa.array(labels)})
    pq.write_table(table, root / "set.parquet", row_group_size=4)
    hf = root / "hf"  # Hugging Face layout: a struct image column, class names, two files
    hf.mkdir()
    struct = pa.array(
        [{"bytes": data, "path": f"{n}.png"} for n, data in enumerate(images)],
        pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
    )
    names = pa.array([LABELS[label] for label in labels])
    for part, rows_ in enumerate((slice(0, 3), slice(3, 6))):
        pq.write_table(
            pa.table({"image": struct[rows_], "label": names[rows_]}),
            hf / f"train-{part:05d}-of-00002.parquet",
        )
    wds = root / "wds"
    wds.mkdir()
    _write_tar(wds / "shard-000000.tar", samples[:4], 0)
    _write_tar(wds / "shard-000001.tar", samples[4:], 4)
    return root


@pytest.fixture(scope="module")
def sources(source_root: Path) -> dict[str, LabelledSet]:
    root = source_root
    return {
        "folder": open_labelled(root / "folder", LABELS),
        "zip": open_labelled(root / "set.zip", LABELS),
        "zip bytes": scan_zip((root / "set.zip").read_bytes(), LABELS, name="upload.zip"),
        "csv": open_labelled(root / "set.csv", LABELS),
        "parquet": open_labelled(root / "set.parquet", LABELS),
        "parquet hf": open_labelled(root / "hf", LABELS),
        "tar": open_labelled(root / "wds", LABELS),
    }


def _encoded(data: bytes | Path) -> bytes:
    return data if isinstance(data, bytes) else data.read_bytes()


@pytest.mark.parametrize(
    "kind", ["folder", "zip", "zip bytes", "csv", "parquet", "parquet hf", "tar"]
)
def test_every_source_gives_back_the_same_labelled_photos(
    kind: str, sources: dict[str, LabelledSet], samples: list
) -> None:
    dataset = sources[kind]

    records = list(dataset.records())

    assert dataset.problems == () and all(isinstance(r, Record) for r in records)
    assert [r.label for r in records] == [s[2] for s in samples]
    assert [_encoded(r.data) for r in records] == [s[3] for s in samples]
    for record, sample in zip(records, samples, strict=True):
        np.testing.assert_array_equal(np.asarray(decode_image(record.data)), sample[4])
    assert [(r.shard, r.offset) for r in records] == sorted((r.shard, r.offset) for r in records)
    assert dataset.count == (None if kind == "tar" else len(samples))
    assert dataset.portable is (kind != "zip bytes")


def test_listed_sets_keep_their_images_and_classes(
    sources: dict[str, LabelledSet], samples: list
) -> None:
    for kind in ("folder", "zip", "zip bytes", "csv"):
        dataset = sources[kind]
        assert [(i.label, _encoded(i.source)) for i in dataset.images] == [
            (s[2], s[3]) for s in samples
        ]
        assert dataset.classes == (0, 1, 2)
    assert sources["folder"].images[0].name == "espresso/0.png"
    for kind in ("parquet", "tar"):
        with pytest.raises(InputError, match=r"use records\(\)"):
            _ = sources[kind].images


def test_shard_size_cuts_the_listing_without_changing_the_records(
    sources: dict[str, LabelledSet],
) -> None:
    dataset = sources["zip"]
    cut = dataset.with_shard_size(4)

    assert [s.count for s in dataset.shards] == [6] and [s.count for s in cut.shards] == [4, 2]
    assert [(r.name, r.data) for r in cut.records()] == [
        (r.name, r.data) for r in dataset.records()
    ]
    assert [s.row_group for s in sources["parquet"].shards] == [0, 1]
    assert [s.count for s in sources["parquet"].shards] == [4, 2]
    assert len(sources["tar"].shards) == 2 and sources["tar"].shards[1].count is None


def _read_all(shard: Shard) -> list[Record | str]:
    return list(read_shard(shard))


def test_shards_are_read_alike_in_spawned_processes(sources: dict[str, LabelledSet]) -> None:
    portable = {kind: s for kind, s in sources.items() if s.portable}
    shards = [(kind, shard) for kind, s in portable.items() for shard in s.shards]
    assert all(pickle.loads(pickle.dumps(shard)) == shard for _, shard in shards)

    spawn = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=spawn) as pool:
        read = list(pool.map(_read_all, [shard for _, shard in shards]))

    for kind, dataset in portable.items():
        remote = [r for (k, _), found in zip(shards, read, strict=True) if k == kind for r in found]
        assert remote == list(dataset.records()), kind
    upload = sources["zip bytes"]
    assert pickle.loads(pickle.dumps(upload)).images[2].source == upload.images[2].source
    with pytest.raises(InputError, match="held in memory"):
        read_shard(upload.shards[0])


def test_problems_are_one_line_each_and_the_rest_is_read(tmp_path: Path, samples: list) -> None:
    good = samples[0][3]
    (tmp_path / "a.png").write_bytes(good)
    (tmp_path / "set.csv").write_text("a.png,espresso\ngone.png,espresso\n")
    shards = tmp_path / "wds"
    shards.mkdir()
    with tarfile.open(shards / "0.tar", "w") as tar:
        for name, payload in (("k1.png", good), ("k1.cls", b"1"), ("k2.png", good),
                              ("k3.cls", b"0"), ("k4.png", good), ("k4.txt", b"teapot"),
                              ("k5.jpg", good), ("k5.cls", b"7")):  # fmt: skip
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zipped:
        zipped.writestr("espresso/ok.png", good)
        zipped.writestr("espresso/bad.png", good)
    data = bytearray(archive.getvalue())
    at = data.find(good, data.find(b"espresso/bad.png"))
    data[at + 100] ^= 0xFF  # the CRC no longer matches
    (tmp_path / "set.zip").write_bytes(data)

    csv_set = open_labelled(tmp_path / "set.csv", LABELS)
    tar_read = list(open_labelled(shards, LABELS).records())
    zip_read = list(open_labelled(tmp_path / "set.zip", LABELS).records())
    upload_read = list(scan_zip(bytes(data), LABELS).records())

    assert csv_set.problems == ("gone.png: no such file (line 2), skipped",)
    assert [r.name for r in csv_set.records()] == ["a.png"]
    assert [r.label for r in tar_read if isinstance(r, Record)] == [1]
    assert [p for p in tar_read if isinstance(p, str)] == [
        "k2: no label (.cls, .txt or .json), skipped",
        "k3: no image (.jpg, .jpeg, .png, .webp, .bmp), skipped",
        "k4: label 'teapot' matches no label of this model, skipped",
        "k5: class index 7 out of range 0 to 2, skipped",
    ]
    assert [r.offset for r in tar_read if isinstance(r, Record)] == [0]
    for read in (zip_read, upload_read):
        assert [r.name if isinstance(r, Record) else r for r in read] == [
            "espresso/bad.png: cannot be read from the archive (BadZipFile)",
            "espresso/ok.png",
        ]
    with pytest.raises(InputError, match="cannot be read from the archive"):
        _ = scan_zip(bytes(data), LABELS).images[0].source


def test_a_label_matching_no_class_stops_and_is_named(tmp_path: Path, samples: list) -> None:
    (tmp_path / "a.png").write_bytes(samples[0][3])
    (tmp_path / "set.csv").write_text("a.png,espresso\na.png,spaceship\na.png,teapot\n")
    table = pa.table({"img": [samples[0][3]] * 2, "labels": ["espresso", "spaceship"]})
    pq.write_table(table, tmp_path / "set.parquet")
    pq.write_table(pa.table({"png": [b"x"], "label": [3]}), tmp_path / "index.parquet")

    with pytest.raises(InputError) as csv_error:
        open_labelled(tmp_path / "set.csv", LABELS)
    with pytest.raises(InputError, match=r"set.parquet: label\(s\) 'spaceship' match no label"):
        open_labelled(tmp_path / "set.parquet", LABELS)
    with pytest.raises(InputError, match=r"class index\(es\) 3 out of range; expected 0 to 2"):
        open_labelled(tmp_path / "index.parquet", LABELS)

    message = str(csv_error.value)
    assert "\n" not in message
    assert message.startswith("set.csv: label(s) 'spaceship', 'teapot' match no label")
    assert "'tabby cat', 'espresso', 'T-shirt/top'" in message


def test_limits_and_unknown_sources(tmp_path: Path, source_root: Path) -> None:
    for source in ("folder", "set.zip", "set.csv", "set.parquet"):
        with pytest.raises(InputError, match=r": 6 images; at most 5 are accepted"):
            open_labelled(source_root / source, LABELS, max_images=5)
    (tmp_path / "notes.txt").write_text("no images")
    with pytest.raises(InputError, match=r"expected a folder or a .zip, .csv, .parquet or .tar"):
        open_labelled(tmp_path / "notes.txt", LABELS)
    with pytest.raises(InputError, match=r"expected one sub-folder per class, \*\.parquet files"):
        open_labelled(tmp_path, LABELS)
    with pytest.raises(InputError, match="no such file or folder"):
        open_labelled(tmp_path / "missing.parquet", LABELS)


def test_a_parquet_file_is_read_a_row_group_at_a_time(tmp_path: Path, samples: list) -> None:
    photo = _png(_photo("chelsea"))  # a real photo, about 220 kB
    rows = -(-MEMORY_SET_BYTES // len(photo))
    table = pa.table({"image": pa.array([photo] * rows, pa.binary()), "label": [0] * rows})
    path = tmp_path / "big.parquet"
    per_group = -(-rows // MEMORY_ROW_GROUPS)
    pq.write_table(table, path, row_group_size=per_group, compression="none", use_dictionary=False)
    del table
    total = rows * len(photo)
    with pq.ParquetFile(path) as written:
        assert written.num_row_groups == MEMORY_ROW_GROUPS and path.stat().st_size > total

    arrow_before, arrow_peak, seen = pa.total_allocated_bytes(), 0, 0
    tracemalloc.start()
    try:
        dataset = open_labelled(path, LABELS)
        for record in dataset.records():
            assert isinstance(record, Record) and record.data == photo
            arrow_peak = max(arrow_peak, pa.total_allocated_bytes() - arrow_before)
            seen += 1
        python_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert seen == rows == dataset.count
    assert python_peak < MAX_READ_SHARE * total, (python_peak, total)
    assert arrow_peak < MAX_READ_SHARE * total, (arrow_peak, total)
