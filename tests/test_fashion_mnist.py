"""Fashion-MNIST data reading and the shipped CNN's architecture."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inference.analysis.evaluate import label_key
from training import fashion_mnist

needs_dataset = pytest.mark.skipif(
    not (fashion_mnist.DATA_DIR / "t10k-images-idx3-ubyte.gz").is_file(),
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


def test_missing_dataset_says_how_to_install(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        fashion_mnist.load_split("train", data_dir=tmp_path)


def test_architecture_is_a_vgg_style_cnn() -> None:
    import keras

    model = fashion_mnist.build_model()
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    pools = [layer for layer in model.layers if isinstance(layer, keras.layers.MaxPooling2D)]
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]

    assert [c.kernel_size for c in convs] == [(3, 3)] * 4
    assert len(pools) == 2 and len(norms) == 4
    assert model.output_shape == (None, 10)
    assert fashion_mnist.WEIGHTS_PATH.stat().st_size < 5_000_000
