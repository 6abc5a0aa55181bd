"""Fashion-MNIST data reading, the zoo's spec against the data set, the shipped CNN."""

from __future__ import annotations

import gzip
import re
import struct
from pathlib import Path

import numpy as np
import pytest

from inference import ZOO
from inference.analysis.evaluate import label_key
from training import fashion_mnist

DATASET_README = Path("/usr/share/doc/dataset-fashion-mnist/README.md.gz")
"""Zalando's README, as Debian's dataset-fashion-mnist ships it: it publishes the labels."""
IDX3_UBYTE = 0x0803
"""The idx magic number of a three-dimensional array of unsigned bytes."""

needs_dataset = pytest.mark.skipif(
    not (fashion_mnist.DATA_DIR / "t10k-images-idx3-ubyte.gz").is_file()
    or not DATASET_README.is_file(),
    reason="Debian package dataset-fashion-mnist is not installed (.ci/run installs it)",
)


@needs_dataset
def test_reads_the_test_split() -> None:
    images, labels = fashion_mnist.load_split("test")

    assert images.shape == (10_000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10_000,)
    assert np.bincount(labels).tolist() == [1000] * 10  # the test split is balanced
    assert images.max() == 255 and images.min() == 0


@needs_dataset
def test_export_writes_one_folder_per_class(tmp_path: Path) -> None:
    count = fashion_mnist.export(tmp_path, per_class=2)

    folders = sorted(p.name for p in tmp_path.iterdir())
    assert count == 20 and len(folders) == 10
    assert "t_shirt_top" in folders
    assert {label_key(f) for f in folders} == {label_key(c) for c in fashion_mnist.CLASSES}


@needs_dataset
def test_the_zoo_spec_takes_the_data_sets_images_and_published_labels() -> None:
    """The oracle is the data set itself: its README's label table and its image files."""
    with gzip.open(DATASET_README, "rt", encoding="utf-8") as text:
        readme = text.read()
    table = readme.split("| Label | Description |\n| --- | --- |\n", 1)[1].split("\n\n", 1)[0]
    rows = re.findall(r"^\| (\d+) \| (.+?) \|$", table, re.MULTILINE)
    with gzip.open(fashion_mnist.DATA_DIR / "t10k-images-idx3-ubyte.gz") as images:
        magic, _, height, width = struct.unpack(">IIII", images.read(16))
    spec = ZOO["fashion_mnist_cnn"]

    assert [int(index) for index, _ in rows] == list(range(len(rows)))
    assert spec.labels == tuple(name for _, name in rows)  # index-aligned with the outputs
    assert magic == IDX3_UBYTE
    assert spec.preprocessing.input_shape == (height, width, 1)  # one grey channel


def test_missing_dataset_says_how_to_install(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        fashion_mnist.load_split("train", data_dir=tmp_path)


def test_architecture_is_a_vgg_style_cnn() -> None:
    import keras

    from inference.models.builders import keras_output_kind

    model = fashion_mnist.build_model()
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    pools = [layer for layer in model.layers if isinstance(layer, keras.layers.MaxPooling2D)]
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]

    assert [c.kernel_size for c in convs] == [(3, 3)] * 4
    assert len(pools) == 2 and len(norms) == 4
    assert model.output_shape == (None, 10)
    assert keras_output_kind(model) == ZOO["fashion_mnist_cnn"].outputs
    assert fashion_mnist.WEIGHTS_PATH.stat().st_size < 5_000_000
