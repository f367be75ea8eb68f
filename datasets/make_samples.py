"""Write the small real samples in datasets/ from the Fashion-MNIST test split.

    .venv/bin/python datasets/make_samples.py

Deterministic: the same IDX files give the same JPEG bytes. It takes the first PER_CLASS test
images of each class (test split only, so no model trained on the training split has seen them)
and writes them as grayscale JPEGs in one folder per class, the layout of an image-folder data set.
"""

from __future__ import annotations

import io
import re
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from edgenn.datasets import load_fashion_mnist  # noqa: E402

PER_CLASS = 30
OUT = Path(__file__).resolve().parent / "fashion-mnist-samples"


def folder_name(label: str) -> str:
    """Class names as folder names: 'T-shirt/top' -> 'T-shirt_top', 'Ankle boot' -> 'Ankle_boot'."""
    return re.sub(r"[^A-Za-z0-9-]+", "_", label)


def main() -> None:
    ds = load_fashion_mnist(allow_download=False)
    for cls, label in enumerate(ds.labels):
        folder = OUT / folder_name(label)
        folder.mkdir(parents=True, exist_ok=True)
        for index in np.flatnonzero(ds.y_test == cls)[:PER_CLASS]:
            buf = io.BytesIO()
            Image.fromarray(ds.x_test[index, :, :, 0]).save(buf, "JPEG", quality=95)
            (folder / f"test-{index:05d}.jpg").write_bytes(buf.getvalue())
    print(f"wrote {PER_CLASS * len(ds.labels)} images under {OUT}")


if __name__ == "__main__":
    main()
