"""edgenn camera's pipeline FPS against decode-only and inference-only FPS on the same video.

    .venv/bin/python benchmarks/camera_pipeline.py [--frames 900] [--size 640x480] [--model ...]

The source is a video file (MJPG, 640x480, made from Fashion-MNIST test images), played with
--every-frame so that no frame is dropped and every run classifies the same frames. Decode-only:
OpenCV reads and converts every frame, nothing else. Inference-only: the consumer's work on
already decoded frames (colour conversion, resize, classify). Pipeline: edgenn camera end to end,
capture thread and inference overlapping. Target: pipeline FPS >= 90% of the lower of the two.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from common import report
from PIL import Image

from edgenn import datasets as data
from edgenn import preprocess
from edgenn.camera import CameraOptions, run_camera
from edgenn.predict import Classifier

REPO = Path(__file__).resolve().parent.parent


def make_video(path: Path, frames: int, width: int, height: int) -> None:
    fm = data.load_fashion_mnist(allow_download=False)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (width, height))
    for i in range(frames):
        img = (
            Image.fromarray(fm.x_test[i % len(fm.x_test), :, :, 0])
            .convert("RGB")
            .resize((width, height))
        )
        writer.write(cv2.cvtColor(np.asarray(img), cv2.COLOR_RGB2BGR))
    writer.release()


def decode_only(path: Path) -> tuple[float, list[np.ndarray]]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    start = time.perf_counter()
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    seconds = time.perf_counter() - start
    cap.release()
    return len(frames) / seconds, frames


def inference_only(model: Path, frames: list[np.ndarray]) -> float:
    clf = Classifier(model)
    start = time.perf_counter()
    for frame in frames:
        img = preprocess.convert_mode(Image.fromarray(frame), clf.spec.color_mode)
        clf.classify_pixels(preprocess.resize_pixels(img, clf.spec), 3)
    return len(frames) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=900)
    parser.add_argument("--size", default="640x480")
    parser.add_argument(
        "--model", type=Path, default=REPO / "runs/bench/quantization/cnn/int8-cpu.tflite"
    )
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "clip.avi"
        make_video(video, args.frames, width, height)
        decode_fps, frames = decode_only(video)
        infer_fps = inference_only(args.model, frames)
        summary = run_camera(args.model, CameraOptions(source=str(video), every_frame=True))
        lower = min(decode_fps, infer_fps)
        rows.append(
            {
                "model": args.model.name,
                "video": f"{len(frames)} frames {args.size} MJPG",
                "decode_only_fps": round(decode_fps, 1),
                "inference_only_fps": round(infer_fps, 1),
                "pipeline_fps": round(summary.fps, 1),
                "pipeline_vs_lower": round(summary.fps / lower, 3),
                "target": ">= 0.90",
                "frames_classified": summary.frames,
            }
        )
    report("camera_pipeline", rows)


if __name__ == "__main__":
    main()
