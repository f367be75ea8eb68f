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

import pytest
from click.testing import CliRunner
from PIL import Image

from edgenn import artifact, optional, tag, tflite_model, xmp
from edgenn.cli import main
from edgenn.cli import tag as tag_cli

from .conftest import REPO, SAMPLES, finishes
from .test_preprocess import HEIC_HEADER

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
    # Written as another tool could: artifact.embed itself refuses labels that do not fit.
    doc = artifact.metadata_bytes(["Bag", "Coat", "Shirt"], spec)
    bad.write_bytes(tflite_model.embed_metadata(MODEL.read_bytes(), artifact.METADATA_ENTRY, doc))
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


def test_links_and_fifos_given_as_photos_are_one_failed_file_each(album):
    loop = album / "loop.jpg"
    loop.symlink_to(loop)
    dangling = album / "gone.jpg"
    dangling.symlink_to(album / "nowhere.jpg")
    fifo = album / "pipe.jpg"
    os.mkfifo(fifo)
    good = album / "Bag-0.jpg"
    args = ["tag", "-m", str(MODEL), str(good), str(loop), str(dangling), str(fifo), "--json"]
    result = finishes(lambda: CliRunner().invoke(main, args), fifos=[fifo])
    assert result.exit_code == 1, result.output
    summary = json.loads(result.stdout)
    assert summary["tagged"] == 1 and summary["failed"] == 3
    errors = {os.path.basename(f["photo"]): f["error"] for f in summary["failures"]}
    assert "symlink loop" in errors["loop.jpg"] and "dangling symlink" in errors["gone.jpg"]
    assert "not a regular file" in errors["pipe.jpg"]
    assert all("\n" not in e for e in errors.values())
    # In a folder walk they are not photos: the run neither hangs nor stops.
    result = finishes(
        lambda: CliRunner().invoke(main, ["tag", "-m", str(MODEL), str(album), "--json"]),
        fifos=[fifo],
    )
    assert json.loads(result.stdout)["photos"] == 15


@pytest.fixture
def pair(tmp_path):
    """shoe.jpg and shoe.png (the same real photo as JPEG and PNG) beside bag.jpg."""
    folder = tmp_path / "pair"
    folder.mkdir()
    _photo(next(SAMPLES.glob("Sneaker/*.jpg")), folder / "shoe.jpg")
    Image.open(folder / "shoe.jpg").save(folder / "shoe.png")
    _photo(next(SAMPLES.glob("Bag/*.jpg")), folder / "bag.jpg")
    return folder


def _tag_json(*args):
    result = CliRunner().invoke(main, ["tag", "-m", str(MODEL), *map(str, args), "--json"])
    return result.exit_code, json.loads(result.stdout)


def test_sidecar_replace_names_that_collide_are_reported_not_lost(pair):
    for run in range(2):  # a rerun reports them again: nothing is skipped as if done
        code, summary = _tag_json(pair, "--sidecar", "replace")
        assert code == 1 and summary["failed"] == 2
        assert (summary["tagged"], summary["skipped"]) == ((1, 0), (0, 1))[run]
        errors = {os.path.basename(f["photo"]): f["error"] for f in summary["failures"]}
        assert set(errors) == {"shoe.jpg", "shoe.png"}
        assert "shoe.png" in errors["shoe.jpg"] and "shoe.jpg" in errors["shoe.png"]
        assert all("shoe.xmp" in e and "--sidecar ext" in e for e in errors.values())
        assert not (pair / "shoe.xmp").exists() and (pair / "bag.xmp").is_file()
    code, summary = _tag_json(pair, "--sidecar", "replace", "--dry-run")
    assert code == 1 and summary["failed"] == 2
    code, summary = _tag_json(pair, "--sidecar", "ext")
    assert code == 0 and summary["tagged"] == 3


def test_a_photo_added_beside_a_tagged_one_is_not_skipped(pair):
    """shoe.xmp was written for shoe.jpg; shoe.png arrives later: neither is taken as done."""
    (pair / "shoe.png").rename(pair / "later.png")
    code, summary = _tag_json(pair, "--sidecar", "replace")
    assert code == 0 and summary["tagged"] == 3 and (pair / "shoe.xmp").is_file()
    (pair / "later.png").rename(pair / "shoe.png")
    before = (pair / "shoe.xmp").read_bytes()
    code, summary = _tag_json(pair / "shoe.png", "--sidecar", "replace")
    assert code == 1 and summary["skipped"] == 0 and summary["failed"] == 1
    assert "shoe.jpg" in summary["failures"][0]["error"]
    assert (pair / "shoe.xmp").read_bytes() == before


def test_a_heic_photo_names_the_package_that_reads_it(tmp_path):
    if optional.available("pillow_heif"):
        pytest.skip("pillow-heif is installed: HEIC photos are read")
    photo = tmp_path / "IMG_0001.HEIC"
    photo.write_bytes(HEIC_HEADER)
    code, summary = _tag_json(photo)
    assert code == 1
    error = summary["failures"][0]["error"]
    assert "pillow-heif" in error and optional.dependency("pillow_heif").install in error


def test_a_retag_keeps_the_manifest_entries_of_other_photos(album, tmp_path):
    out = tmp_path / "tags.json"
    code, summary = _tag_json(album, "--format", "json", "-o", out)
    assert summary["tagged"] == 12
    code, summary = _tag_json(album / "Bag-0.jpg", "--format", "json", "-o", out, "--retag")
    assert code == 0 and summary["tagged"] == 1
    assert len(json.loads(out.read_text())["photos"]) == 12


def test_a_retag_never_replaces_a_file_that_is_not_a_manifest(album, tmp_path):
    for fmt, text in (("json", '{"mine": 1}\n'), ("csv", "name,size\nx,1\n")):
        out = tmp_path / f"notes.{fmt}"
        out.write_text(text)
        result = CliRunner().invoke(
            main, ["tag", "-m", str(MODEL), str(album), "--format", fmt, "-o", str(out), "--retag"]
        )
        assert result.exit_code == 1 and f"not an edgenn {fmt} manifest" in result.stderr
        assert out.read_text() == text
    folder = tmp_path / "folder.json"
    folder.mkdir()
    result = CliRunner().invoke(
        main, ["tag", "-m", str(MODEL), str(album), "--format", "json", "-o", str(folder)]
    )
    assert result.exit_code == 1 and len(result.stderr.splitlines()) == 1
    assert "is a folder" in result.stderr
