"""Build and train the example model that ships in this folder (``tiny_cnn.keras``).

A small CNN that tells three kinds of generated 64x64 pictures apart (a filled disc,
a filled square, horizontal stripes), trained for a few seconds on data made here
with a fixed seed: no downloads.  Normalisation is inside the model (a Rescaling
layer), so the deployment feeds raw 0..255 RGB pixels: ``blobFromImage(img,
scalefactor=1.0, size=(64, 64), mean=(0, 0, 0), swapRB=True)``.

    python examples/build_tiny_cnn.py            # writes examples/tiny_cnn.keras
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

SIZE = 64
CLASSES = ("disc", "square", "stripes")


def make_images(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """RGB uint8 pictures with random colours, positions and sizes, and their labels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    images = np.empty((count, SIZE, SIZE, 3), np.uint8)
    labels = rng.integers(0, len(CLASSES), count)
    for i, label in enumerate(labels):
        bg, fg = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        while np.abs(bg.astype(int) - fg).sum() < 150:
            fg = rng.integers(0, 256, 3)
        cy, cx, r = rng.integers(20, 44), rng.integers(20, 44), rng.integers(8, 18)
        if label == 0:
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        elif label == 1:
            mask = (np.abs(yy - cy) <= r) & (np.abs(xx - cx) <= r)
        else:
            mask = (yy // rng.integers(3, 7)) % 2 == 0
        img = np.where(mask[..., None], fg, bg) + rng.normal(0, 8, (SIZE, SIZE, 3))
        images[i] = np.clip(img, 0, 255).astype(np.uint8)
    return images, labels


def build_model(seed: int = 0):  # noqa: ANN201 - keras imported lazily
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    x = layers.Rescaling(1 / 255.0)(inputs)
    for filters in (8, 16, 32):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
        x = layers.MaxPooling2D()(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.2)(x)
    x = layers.Dense(len(CLASSES))(x)
    outputs = layers.Softmax(name="probs")(x)
    return keras.Model(inputs, outputs, name="tiny_cnn")


def keras_adam():  # noqa: ANN201
    import keras

    return keras.optimizers.Adam(3e-3)


def main(out: Path) -> None:
    model = build_model()
    x, y = make_images(1500, seed=1)
    model.compile(optimizer=keras_adam(), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x.astype("float32"), y, epochs=15, batch_size=32, verbose=0)
    xv, yv = make_images(300, seed=2)
    _, acc = model.evaluate(xv.astype("float32"), yv, verbose=0)
    model.save(out)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB), validation accuracy {acc:.3f}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("tiny_cnn.keras"))
