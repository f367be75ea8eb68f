"""edgenn tag: XMP sidecars that real clients read, merged sidecars, untouched photos, resumable."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from edgenn import preprocess, tag
from edgenn.cli import main

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


def test_exiftool_reads_the_keywords(album):
    CliRunner().invoke(main, ["tag", "-m", str(MODEL), str(album), "--threshold", "0"])
    exiftool = shutil.which("exiftool")
    assert exiftool, "exiftool (libimage-exiftool-perl) is installed by scripts/setup.sh test"
    side = album / "Bag-0.jpg.xmp"
    out = subprocess.run(
        [exiftool, "-j", "-XMP-dc:Subject", "-XMP-lr:HierarchicalSubject", str(side)],
        capture_output=True,
        text=True,
        check=True,
    )
    doc = json.loads(out.stdout)[0]
    subjects = doc["Subject"] if isinstance(doc["Subject"], list) else [doc["Subject"]]
    hierarchy = doc["HierarchicalSubject"]
    hierarchy = hierarchy if isinstance(hierarchy, list) else [hierarchy]
    assert subjects and all(h.startswith("edgenn|") for h in hierarchy)
    assert [h.split("|", 1)[1] for h in hierarchy] == subjects


FOREIGN = """<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="darktable">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about=""
    xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    xmlns:dc="http://purl.org/dc/elements/1.1/"
    xmlns:lr="http://ns.adobe.com/lightroom/1.0/"
    xmlns:darktable="http://darktable.sf.net/"
    xmp:Rating="4"
    darktable:xmp_version="5">
   <dc:subject><rdf:Bag><rdf:li>holiday</rdf:li><rdf:li>family</rdf:li></rdf:Bag></dc:subject>
   <lr:hierarchicalSubject><rdf:Bag><rdf:li>places|beach</rdf:li></rdf:Bag></lr:hierarchicalSubject>
   <darktable:history><rdf:Seq><rdf:li darktable:operation="exposure" darktable:enabled="1"/></rdf:Seq></darktable:history>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
<?xpacket end="w"?>
"""


def test_existing_sidecar_is_merged_not_replaced(album):
    photo = album / "Sneaker-0.jpg"
    side = album / "Sneaker-0.jpg.xmp"
    side.write_text(FOREIGN)
    for args in ([], ["--retag"], ["--retag", "--threshold", "0"]):
        result = CliRunner().invoke(main, ["tag", "-m", str(MODEL), str(photo), *args])
        assert result.exit_code == 0, result.output
    text = side.read_text()
    # Everything that was there survives, with its own prefixes.
    for kept in (
        "holiday",
        "family",
        "places|beach",
        'xmp:Rating="4"',
        "darktable:history",
        'darktable:operation="exposure"',
        'darktable:xmp_version="5"',
        'xmlns:darktable="http://darktable.sf.net/"',
    ):
        assert kept in text, kept
    # edgenn's keywords are updated in place, never duplicated across reruns.
    root, _ = tag.read_sidecar(side)
    subjects = tag._bag_items(root.find(".//" + tag._q("dc", "subject")))
    assert subjects[:2] == ["holiday", "family"] and len(subjects) == len(set(subjects))
    assert text.count("<edgenn:ModelHash>") == 1
    assert len(subjects) == 2 + 3  # --threshold 0 with k=3: three labels
    exif = subprocess.run(
        ["exiftool", "-j", "-XMP-dc:Subject", str(side)], capture_output=True, text=True
    )
    assert "holiday" in exif.stdout


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
