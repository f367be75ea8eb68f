"""edgenn tag versus a naive single-threaded loop on 1,000 photos of realistic size.

    .venv/bin/python benchmarks/tagging.py [--photos 1000] [--model runs/bench/quantization/cnn/int8-cpu.tflite]

The photos are real images (Fashion-MNIST test images, upscaled to 1600x1200 RGB, JPEG quality
90, a third of them with an EXIF orientation). The naive loop is what a first script does: Pillow
open, full decode, EXIF transpose, convert, resize, invoke, one photo after another. Target:
edgenn tag >= 2x the naive loop's photos per second on this 2-core machine.

edgenn tag reads each photo the way every other command does (``edgenn.preprocess.load_pixels``:
a JPEG decoded at reduced scale, no less than twice the model input); the script checks that its
scores are those of ``edgenn predict``'s path on every photo, and counts the photos whose top label
differs from the naive loop's full decode.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import report
from PIL import Image, ImageOps

from edgenn import datasets as data
from edgenn import preprocess
from edgenn.predict import Classifier
from edgenn.tag import find_photos, tag

REPO = Path(__file__).resolve().parent.parent


def make_photos(folder: Path, count: int) -> None:
    fm = data.load_fashion_mnist(allow_download=False)
    for i in range(count):
        img = (
            Image.fromarray(fm.x_test[i, :, :, 0])
            .convert("RGB")
            .resize((1600, 1200), Image.Resampling.BICUBIC)
        )
        exif = Image.Exif()
        if i % 3 == 1:
            img = img.transpose(Image.Transpose.ROTATE_90)
            exif[0x0112] = 6
        img.save(folder / f"photo{i:04d}.jpg", "JPEG", quality=90, exif=exif)


def naive(model: Path, photos: list[Path]) -> tuple[float, list[str]]:
    """Photos per second of a plain loop, and each photo's top label."""
    clf = Classifier(model)
    spec = clf.spec
    top = []
    start = time.perf_counter()
    for photo in photos:
        with Image.open(photo) as img:
            img.load()
            img = ImageOps.exif_transpose(img).convert(spec.color_mode)
            pixels = preprocess.resize_pixels(img, spec)
        top.append(clf.classify_pixels(pixels, 1)[0][0].label)
    return len(photos) / (time.perf_counter() - start), top


def same_as_predict(model: Path, results: list) -> bool:
    """Whether tag's scores are, on every photo, those of the path edgenn predict takes."""
    clf = Classifier(model)
    for result in results:
        expected = {
            c.label: round(float(c.score), 4) for c in clf.classify_file(result.photo).top_k
        }
        if result.scores != expected:
            return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=1000)
    parser.add_argument(
        "--model", type=Path, default=REPO / "runs/bench/quantization/cnn/int8-cpu.tflite"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_photos(folder, args.photos)
        photos = find_photos([folder])
        size_mb = sum(p.stat().st_size for p in photos) / 1e6
        naive_rate, naive_top = naive(args.model, photos)
        summary, results = tag(args.model, photos)
        edgenn_rate = summary.photos_per_second
        assert summary.tagged == len(photos) and summary.failed == 0
        assert same_as_predict(args.model, results), "tag and predict disagree"
        tag_top = [max(r.scores, key=r.scores.get) for r in results]
        rows = [
            {
                "photos": len(photos),
                "size": "1600x1200 JPEG",
                "total_mb": round(size_mb, 1),
                "naive_photos_per_s": round(naive_rate, 1),
                "edgenn_tag_photos_per_s": round(edgenn_rate, 1),
                "speedup": round(edgenn_rate / naive_rate, 2),
                "target": ">= 2x",
                "same_as_predict": "all photos",
                "top1_differs_from_full_decode": sum(a != b for a, b in zip(naive_top, tag_top)),
            }
        ]
    report("tagging", rows)


if __name__ == "__main__":
    main()
