"""Copy a few real .tflite models out of a MediaPipe wheel for the tests.

    python scripts/extract_models.py mediapipe-0.10.21-*.whl tests/.models

The models cover what a third-party file can hold: fp16 weights behind DEQUANTIZE, sparse weights
(DENSIFY), custom ops, several outputs.
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

MODELS = [
    "mediapipe/modules/face_detection/face_detection_short_range.tflite",
    "mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite",
    "mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite",
    "mediapipe/modules/hand_landmark/hand_landmark_lite.tflite",
]


def main() -> None:
    wheel, out = Path(sys.argv[1]), Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as zf:
        for name in MODELS:
            (out / Path(name).name).write_bytes(zf.read(name))
    print(f"extracted {len(MODELS)} models into {out}")


if __name__ == "__main__":
    main()
