"""edgenn tag: untouched photos, fast faithful decoding, resumable runs, manifests, CLI choices.

The sidecar format itself (what exiftool reads, merging) is tested in test_xmp.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from edgenn import artifact, preprocess, tag, tflite_model, xmp
from edgenn.cli import main
from edgenn.cli import tag as tag_cli

from .conftest import REPO, SAMPLES

MODEL = REPO / "tests" / "data" / "tiny_cnn_int8.tflite"


#: Pixels stored so that the EXIF orientation turns them upright again, as a camera does.
STORED_FOR = {6: Image.Transpose.ROTATE_90, 3: Image.Transpose.ROTATE_180}


def _photo(src, dest, size=(400, 400), orientation=None, quality=90):
    img = Image.open(src).convert("RGB").resize(size)
    exif = Image.Exif()
    if orientation:
        img = img.transpose(STORED_FOR[orientation])
        exif[0x0112] = orientation
    img.save(dest, "JPEG", quality=quality, exif=exif)
    return dest


@pytest.fixture
def album(tmp_path):
    """12 real photos (Fashion-MNIST test images as 400x400 JPEGs), some with EXIF orientation,
    plus a truncated JPEG, a text file named .jpg and a decompression bomb."""
    folder = tmp_path / "album"
    folder.mkdir()
    for cls in ["Bag", "Trouser", "Sneaker", "Ankle_boot"]:
        for j, src in enumerate(sorted((SAMPLES / cls).glob("*.jpg"))[:3]):
            _photo(src, folder / f"{cls}-{j}.jpg", orientation=[None, 6, 3][j])
    good = sorted(folder.glob("*.jpg"))
    raw = good[0].read_bytes()
    (folder / "truncated.jpg").write_bytes(raw[: len(raw) // 3])
    (folder / "notes.jpg").write_text("not a photo")
    Image.new("1", (14000, 14000)).save(folder / "bomb.png")  # 196 Mpx: over Pillow's limit
    return folder


def _sha(folder):
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in folder.iterdir()
        if p.suffix != ".xmp"
    }


def test_tags_photos_and_never_touches_them(album):
    before = _sha(album)
    mtimes = {p.name: p.stat().st_mtime_ns for p in album.iterdir()}
    result = CliRunner().invoke(
        main, ["tag", "-m", str(MODEL), str(album), "-k", "2", "--threshold", "0.3", "--json"]
    )
    assert result.exit_code == 1  # three bad files
    summary = json.loads(result.stdout)
    assert summary["tagged"] == 12 and summary["failed"] == 3 and summary["photos"] == 15
    failures = {os.path.basename(f["photo"]): f["error"] for f in summary["failures"]}
    assert "decompression bomb" in failures["bomb.png"]
    assert "truncated or damaged" in failures["truncated.jpg"]
    assert "not an image" in failures["notes.jpg"]
    assert "edgenn: warning:" in result.stderr
    assert _sha(album) == before
    assert all(p.stat().st_mtime_ns == mtimes[p.name] for p in album.iterdir() if p.name in mtimes)
    assert len(list(album.glob("*.jpg.xmp"))) == 12 and not list(album.glob(".*.tmp"))
    # Most real images get their class as a keyword (a tiny 75%-accurate model).
    right = sum(
        p.name.split("-")[0].replace("_", " ") in p.with_name(p.name + ".xmp").read_text()
        for p in album.glob("*-?.jpg")
    )
    assert right >= 8


def test_rerun_skips_photos_tagged_by_the_same_model(album):
    CliRunner().invoke(main, ["tag", "-m", str(MODEL), str(album)])
    again = CliRunner().invoke(main, ["tag", "-m", str(MODEL), str(album), "--json"])
    summary = json.loads(again.stdout)
    assert summary["skipped"] == 12 and summary["tagged"] == 0


def test_sidecar_styles_dry_run_and_manifests(album, tmp_path):
    result = CliRunner().invoke(
        main, ["tag", "-m", str(MODEL), str(album / "Bag-0.jpg"), "--dry-run"]
    )
    assert "would tag" in result.stdout and not list(album.glob("*.xmp"))
    CliRunner().invoke(
        main, ["tag", "-m", str(MODEL), str(album / "Bag-0.jpg"), "--sidecar", "replace"]
    )
    assert (album / "Bag-0.xmp").is_file() and not (album / "Bag-0.jpg.xmp").exists()
    for fmt in ("json", "csv"):
        out = tmp_path / f"tags.{fmt}"
        r = CliRunner().invoke(
            main, ["tag", "-m", str(MODEL), str(album), "--format", fmt, "-o", str(out), "--json"]
        )
        assert json.loads(r.stdout)["tagged"] == 12 and out.is_file()
        r = CliRunner().invoke(
            main, ["tag", "-m", str(MODEL), str(album), "--format", fmt, "-o", str(out), "--json"]
        )
        assert json.loads(r.stdout)["skipped"] == 12
    rows = json.loads((tmp_path / "tags.json").read_text())["photos"]
    assert len(rows) == 12 and all(r["model_hash"] for r in rows)


def test_decode_matches_the_device_preprocessing():
    """Without draft mode (PNG) decoding is the device preprocessing exactly; JPEG draft decoding
    at reduced size stays close to the full decode."""
    spec = preprocess.PreprocessSpec.for_images(28, 28, "L")
    src = next(SAMPLES.glob("Coat/*.jpg"))
    np.testing.assert_array_equal(tag.decode(src, spec), preprocess.load_pixels(src, spec))


def test_jpeg_draft_decoding_is_close_to_full_decoding(tmp_path):
    spec = preprocess.PreprocessSpec.for_images(28, 28, "L")
    photo = _photo(
        next(SAMPLES.glob("Coat/*.jpg")), tmp_path / "big.jpg", size=(1600, 1200), orientation=6
    )
    fast = tag.decode(photo, spec).astype(int)
    full = preprocess.load_pixels(photo, spec).astype(int)
    assert np.abs(fast - full).mean() < 6


KILL_SCRIPT = """
import sys
from edgenn.cli import main
main(["tag", "-m", sys.argv[1], sys.argv[2], "--workers", "1"])
"""


def test_killed_run_resumes_with_nothing_lost_or_doubled(tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    sources = sorted(SAMPLES.glob("*/*.jpg"))
    for i in range(240):
        _photo(sources[i % len(sources)], folder / f"p{i:03d}.jpg", size=(1200, 900))
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, str(MODEL), str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline and len(list(folder.glob("*.xmp"))) < 40:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(list(folder.glob("*.xmp")))
    assert 0 < done_before < 240
    result = CliRunner().invoke(main, ["tag", "-m", str(MODEL), str(folder), "--json"])
    summary = json.loads(result.stdout)
    assert summary["failed"] == 0 and summary["skipped"] >= done_before - 1
    assert summary["skipped"] + summary["tagged"] == 240
    sidecars = sorted(folder.glob("*.jpg.xmp"))
    assert len(sidecars) == 240 and not list(folder.glob(".*.tmp"))
    for side in sidecars:
        text = side.read_text()
        assert text.count("<edgenn:ModelHash>") == 1


def test_exif_orientation_is_applied_before_inference(tmp_path):
    spec = preprocess.PreprocessSpec.for_images(28, 28, "L")
    src = next(SAMPLES.glob("Trouser/*.jpg"))
    upright = preprocess.load_pixels(src, spec).astype(int)
    for orientation in (6, 3):
        photo = _photo(
            src, tmp_path / f"o{orientation}.jpg", size=(280, 280), orientation=orientation
        )
        assert np.abs(tag.decode(photo, spec).astype(int) - upright).mean() < 8
        # Ignoring the tag would give a rotated garment: far from the upright one.
        raw = np.asarray(
            Image.open(photo).convert("L").resize((28, 28), Image.Resampling.BILINEAR)
        ).astype(int)
        assert np.abs(raw - upright[..., 0]).mean() > 15


def test_the_library_reports_through_callbacks_and_never_prints(album, capfd):
    seen, warnings = [], []
    summary, results = tag.tag(
        MODEL,
        tag.find_photos([album]),
        dry_run=True,
        workers=1,
        progress=lambda done, total, rate: seen.append((done, total, rate)),
        warn=warnings.append,
    )
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert [done for done, _, _ in seen] == list(range(1, 16)) and {t for _, t, _ in seen} == {15}
    assert sorted(warnings) == sorted(r.error for r in results if r.status == "failed")
    assert len(warnings) == 3 and not any(w.startswith("edgenn:") for w in warnings)
    assert summary.dry_run and summary.tagged == 12 and not list(album.glob("*.xmp"))


def test_progress_printer_writes_a_line_per_tenth_in_a_log(tmp_path):
    log = tmp_path / "progress.log"
    with log.open("w") as stream:
        show = tag_cli.progress_printer(stream)
        for done in range(1, 101):
            show(done, 100, 50.0)
    lines = log.read_text().splitlines()
    # The first photo, then each tenth: a log shows the run started and how it went.
    assert [line.split("] ")[1].split(" ")[0] for line in lines] == [
        f"{done}/100" for done in (1, *range(10, 101, 10))
    ]
    assert "\r" not in log.read_text() and lines[-1].startswith(
        "tag [" + "#" * 30 + "] 100/100 50.0 photos/s"
    )


def _option(name):
    return next(p for p in main.commands["tag"].params if p.name == name)


def test_cli_choices_and_defaults_come_from_the_library():
    assert list(_option("fmt").type.choices) == list(tag.FORMATS)
    assert _option("fmt").default == tag.DEFAULT_FORMAT in tag.FORMATS
    assert list(_option("sidecar").type.choices) == list(xmp.SIDECAR_STYLES)
    assert _option("sidecar").default == xmp.DEFAULT_SIDECAR_STYLE
    assert _option("top_k").default == tag.DEFAULT_TOP_K == 3
    assert _option("threshold").default == tag.DEFAULT_THRESHOLD == 0.5
    assert set(tag.MANIFEST_FORMATS) < set(tag.FORMATS)


def test_bad_option_values_are_usage_errors(album):
    photos = tag.find_photos([album])
    for kwargs, message in (
        ({"fmt": "yaml"}, "--format"),
        ({"sidecar": "inline"}, "--sidecar"),
        ({"threshold": 1.5}, "--threshold"),
        ({"top_k": 0}, "--top-k"),
    ):
        with pytest.raises(tag.UsageError, match=message):
            tag.tag(MODEL, photos, **kwargs)
    result = CliRunner().invoke(main, ["tag", "-m", str(MODEL), str(album), "--threshold", "2"])
    assert result.exit_code == 2 and "--threshold must be between 0 and 1" in result.stderr


def test_a_model_whose_labels_do_not_fit_its_outputs_is_refused_in_one_line(album, tmp_path):
    spec = artifact.model_info(tflite_model.load(MODEL)).spec
    bad = tmp_path / "three_labels.tflite"
    bad.write_bytes(artifact.embed(MODEL.read_bytes(), ["Bag", "Coat", "Shirt"], spec))
    result = CliRunner().invoke(main, ["tag", "-m", str(bad), str(album)])
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgenn: error:")
    assert "3 labels" in lines[0] and "10 outputs" in lines[0]
    assert not list(album.glob("*.xmp"))


def test_a_damaged_manifest_is_refused_not_overwritten(album, tmp_path):
    for fmt, text in (("json", "[1, 2]\n"), ("csv", "name,size\nx,1\n")):
        out = tmp_path / f"tags.{fmt}"
        out.write_text(text)
        result = CliRunner().invoke(
            main, ["tag", "-m", str(MODEL), str(album), "--format", fmt, "-o", str(out)]
        )
        assert result.exit_code == 1 and f"not an edgenn {fmt} manifest" in result.stderr
        assert out.read_text() == text
