"""Train the Fashion-MNIST CNN and export the data set: ``python -m training.fashion_mnist``.

::

    python -m training.fashion_mnist train --epochs 15   # assets/fashion_mnist_cnn.weights.h5
    python -m training.fashion_mnist export /tmp/fm       # test images, one folder per class

``train`` reads Debian's ``dataset-fashion-mnist`` files, trains with a fixed
random seed and prints the test accuracy. ``export`` writes a split as a
labelled folder for ``python -m inference evaluate``.

Data: Fashion-MNIST by Zalando Research (MIT licence); 60 000 training and
10 000 test images, 28x28 grayscale, white garment on black.
"""

from __future__ import annotations

import argparse
import gzip
import os
import re
import struct
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from inference.models.fashion_mnist import CLASSES, INPUT_SHAPE, WEIGHTS_PATH, build_model

__all__ = ["CLASSES", "DATA_DIR", "WEIGHTS_PATH", "build_model", "export", "load_split", "train"]

DATA_DIR = Path(os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
RANDOM_SEED = 20261120


def _read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (the MNIST format): magic, dimensions, then uint8 data."""
    with gzip.open(path, "rb") as file:
        data = file.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path}: expected an IDX file of unsigned bytes")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_split(split: str, data_dir: Path = DATA_DIR) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 28, 28)`` uint8 and labels ``(N,)`` of ``"train"`` or ``"test"``.

    Raises:
        FileNotFoundError: The Debian package is not installed.
    """
    prefix = {"train": "train", "test": "t10k"}[split]
    images = data_dir / f"{prefix}-images-idx3-ubyte.gz"
    if not images.is_file():
        raise FileNotFoundError(
            f"{images} not found; install it with: apt-get install dataset-fashion-mnist "
            "(or set FASHION_MNIST_DIR)"
        )
    return _read_idx(images), _read_idx(data_dir / f"{prefix}-labels-idx1-ubyte.gz")


def train(epochs: int, out: Path, batch_size: int = 128) -> float:
    """Train from scratch with a fixed random seed; returns the test accuracy."""
    import keras  # noqa: PLC0415 - Keras only when training

    keras.utils.set_random_seed(RANDOM_SEED)
    x_train, y_train = load_split("train")
    x_test, y_test = load_split("test")
    x_train = x_train[..., None].astype("float32") / 255.0
    x_test = x_test[..., None].astype("float32") / 255.0
    # Mild augmentation: small shifts and mirror images.
    augment = keras.Sequential(
        [
            keras.layers.RandomTranslation(0.05, 0.05, fill_mode="constant"),
            keras.layers.RandomFlip("horizontal"),
        ],
        name="augment",
    )
    model = build_model()
    trainer = keras.Sequential([keras.Input(INPUT_SHAPE), augment, model])
    schedule = keras.optimizers.schedules.CosineDecay(
        1e-3, decay_steps=epochs * (len(x_train) // batch_size)
    )
    trainer.compile(
        keras.optimizers.Adam(schedule), "sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    trainer.fit(x_train, y_train, batch_size=batch_size, epochs=epochs, verbose=2)
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    _, accuracy = model.evaluate(x_test, y_test, batch_size=512, verbose=0)
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save_weights(out)
    return float(accuracy)


def folder_name(label: str) -> str:
    """A file-system-safe folder name for a class: ``T-shirt/top`` -> ``t_shirt_top``."""
    return re.sub(r"[^0-9a-z]+", "_", label.lower()).strip("_")


def export(out: Path, split: str = "test", per_class: int | None = None) -> int:
    """Write a split as PNGs in one folder per class; returns the number of images."""
    images, labels = load_split(split)
    counts = dict.fromkeys(range(len(CLASSES)), 0)
    written = 0
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        label = int(label)
        if per_class is not None and counts[label] >= per_class:
            continue
        folder = out / folder_name(CLASSES[label])
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image, "L").save(folder / f"{index:05d}.png")
        counts[label] += 1
        written += 1
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.fashion_mnist")
    sub = parser.add_subparsers(dest="command", required=True)
    train_parser = sub.add_parser("train", help="train the CNN and save its weights")
    train_parser.add_argument("--epochs", type=int, default=15)
    train_parser.add_argument("--out", type=Path, default=WEIGHTS_PATH)
    export_parser = sub.add_parser("export", help="write images as a labelled folder")
    export_parser.add_argument("out", type=Path)
    export_parser.add_argument("--split", choices=["train", "test"], default="test")
    export_parser.add_argument("--per-class", type=int, default=None)
    args = parser.parse_args(argv)
    if args.command == "train":
        accuracy = train(args.epochs, args.out)
        print(f"test accuracy {accuracy:.4f}; weights written to {args.out}")
    else:
        count = export(args.out, args.split, args.per_class)
        print(f"wrote {count} images to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
