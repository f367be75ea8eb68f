"""[device] Tag photos with a model: XMP keywords that photo managers read; not one photo harmed.

Keywords go into an XMP sidecar (``photo.jpg.xmp`` as darktable and digiKam name it, or
``photo.xmp`` in Lightroom style) under ``dc:subject`` and ``lr:hierarchicalSubject``
(``edgenn|<label>``), with the scores and the model in an edgenn namespace. An existing sidecar is
merged, never replaced: everything in it is kept, and only the keywords edgenn wrote before are
updated. Photos are only ever opened for reading. A rerun skips photos whose sidecar already holds
tags from the same model (by the model's hash), so a run killed halfway finishes on the next run.

Decoding (the slow part on a Pi) runs in a thread pool while the interpreter runs; JPEGs are
decoded at reduced size with Pillow's draft mode when the model input is small.
"""

from __future__ import annotations

import collections
import concurrent.futures
import csv
import dataclasses
import hashlib
import io
import json
import os
import sys
import time
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from edgenn import optional, preprocess
from edgenn.datasets import IMAGE_SUFFIXES
from edgenn.errors import EdgennError, UsageError
from edgenn.fileio import atomic_write_bytes, atomic_write_text
from edgenn.predict import Classifier

#: The image types edgenn reads anywhere, less GIF (not a photo format), plus HEIC/HEIF (read
#: when pillow-heif is installed).
PHOTO_SUFFIXES = (IMAGE_SUFFIXES - {".gif"}) | {".heic", ".heif"}
FORMATS = ("xmp", "json", "csv")
SIDECAR_STYLES = ("ext", "replace")

NS = {
    "x": "adobe:ns:meta/",
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "dc": "http://purl.org/dc/elements/1.1/",
    "lr": "http://ns.adobe.com/lightroom/1.0/",
    "edgenn": "https://github.com/edgenn/edgenn/ns/1.0/",
}
HIERARCHY_ROOT = "edgenn"


def _q(prefix: str, name: str) -> str:
    return f"{{{NS[prefix]}}}{name}"


@dataclasses.dataclass
class PhotoResult:
    """One photo's outcome.

    Attributes:
        photo: The file.
        status: ``tagged``, ``skipped`` (already tagged by this model) or ``failed``.
        keywords: Labels that passed the threshold.
        scores: Top-k labels and scores.
        sidecar: The sidecar written (XMP format).
        error: Why it failed.
    """

    photo: str
    status: str
    keywords: list[str] = dataclasses.field(default_factory=list)
    scores: dict[str, float] = dataclasses.field(default_factory=dict)
    sidecar: str | None = None
    error: str | None = None


@dataclasses.dataclass
class TagSummary:
    """The run's summary (``--json`` prints it)."""

    model: str
    model_hash: str
    photos: int
    tagged: int
    skipped: int
    failed: int
    per_label: dict[str, int]
    seconds: float
    photos_per_second: float
    failures: list[dict[str, str]]
    dry_run: bool
    output: str | None = None


def model_hash(path: Path) -> str:
    """First 16 hex digits of the model file's SHA-256 (identifies "the same model")."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def sidecar_path(photo: Path, style: str = "ext") -> Path:
    """``photo.jpg.xmp`` (ext: darktable, digiKam) or ``photo.xmp`` (replace: Lightroom)."""
    return photo.with_name(photo.name + ".xmp") if style == "ext" else photo.with_suffix(".xmp")


def find_photos(paths: Iterable[Path], recursive: bool = False) -> list[Path]:
    """Photo files among the given files and folders (folders walked with ``recursive``).

    Args:
        paths: Files and folders.
        recursive: Walk sub-folders.

    Returns:
        Sorted, unique photo paths.

    Raises:
        EdgennError: A path does not exist.
    """
    found = []
    for path in map(Path, paths):
        if path.is_dir():
            pattern = path.rglob("*") if recursive else path.glob("*")
            found.extend(
                p
                for p in pattern
                if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES and not p.name.startswith(".")
            )
        elif path.is_file():
            found.append(path)
        else:
            raise EdgennError(f"{path} does not exist.")
    return sorted(dict.fromkeys(found))


def _enable_heif() -> None:
    heif = optional.try_import("pillow_heif")
    if heif is not None:
        heif.register_heif_opener()


def decode(photo: Path, spec: preprocess.PreprocessSpec) -> np.ndarray:
    """Decode a photo into the model's uint8 input pixels, fast.

    JPEGs are decoded with Pillow's draft mode at the smallest DCT scale that is still at least
    twice the model input (a 1600x1200 photo for a 28x28 model decodes at 200x150), then EXIF
    orientation, colour mode and the training resize filter are applied as in training.

    Args:
        photo: The file (opened read-only).
        spec: The model's recipe.

    Returns:
        uint8 pixels shaped as the model input.

    Raises:
        EdgennError: Not an image, truncated, or over Pillow's pixel limit.
    """
    height, width = spec.image_size
    try:
        with warnings.catch_warnings():
            # Over Pillow's pixel limit is refused, not just warned about: a tagger must not be
            # made to allocate gigabytes by one crafted file.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(photo) as img:
                if img.format == "JPEG":
                    side = 2 * max(height, width)
                    img.draft(spec.color_mode, (side, side))
                img.load()
                img = ImageOps.exif_transpose(img)
                img = preprocess.convert_mode(img, spec.color_mode or "RGB")
                return preprocess.resize_pixels(img, spec)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise EdgennError(f"{photo}: refused as a decompression bomb ({exc})") from None
    except UnidentifiedImageError:
        raise EdgennError(f"{photo}: not an image Pillow can decode") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise EdgennError(f"{photo}: could not be decoded ({exc}); truncated or damaged") from None


# ----------------------------------------------------------------------------------------- XMP


def _register_namespaces(extra: dict[str, str]) -> None:
    for prefix, uri in {**extra, **NS}.items():
        if prefix:
            ET.register_namespace(prefix, uri)


def _namespaces_of(data: bytes) -> dict[str, str]:
    found = {}
    for _, (prefix, uri) in ET.iterparse(io.BytesIO(data), events=("start-ns",)):
        found.setdefault(prefix, uri)
    return found


def _empty_xmp() -> ET.Element:
    root = ET.Element(_q("x", "xmpmeta"))
    rdf = ET.SubElement(root, _q("rdf", "RDF"))
    desc = ET.SubElement(rdf, _q("rdf", "Description"))
    desc.set(_q("rdf", "about"), "")
    return root


def _bag_items(prop: ET.Element | None) -> list[str]:
    if prop is None:
        return []
    return [li.text or "" for li in prop.iter(_q("rdf", "li"))]


def _set_bag(desc: ET.Element, tag: str, items: list[str], kind: str = "Bag") -> None:
    prop = desc.find(tag)
    if prop is None:
        prop = ET.SubElement(desc, tag)
    for child in list(prop):
        prop.remove(child)
    container = ET.SubElement(prop, _q("rdf", kind))
    for item in items:
        ET.SubElement(container, _q("rdf", "li")).text = item


def read_sidecar(path: Path) -> tuple[ET.Element, dict[str, str]]:
    """Parse an XMP sidecar (or start an empty one).

    Args:
        path: The sidecar.

    Returns:
        ``(root element, the namespace prefixes it declares)``.

    Raises:
        EdgennError: The file exists but is not XML.
    """
    if not path.exists():
        return _empty_xmp(), {}
    data = path.read_bytes()
    try:
        namespaces = _namespaces_of(data)
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise EdgennError(
            f"{path}: the existing sidecar is not valid XML ({exc}); it was left as it is"
        ) from None
    return root, namespaces


def sidecar_model_hash(path: Path) -> str | None:
    """The edgenn model hash recorded in a sidecar (None when absent or unreadable)."""
    if not path.exists():
        return None
    try:
        root, _ = read_sidecar(path)
    except EdgennError:
        return None
    for desc in root.iter(_q("rdf", "Description")):
        value = desc.get(_q("edgenn", "ModelHash"))
        node = desc.find(_q("edgenn", "ModelHash"))
        if node is not None and node.text:
            return node.text
        if value:
            return value
    return None


def merge_tags(
    root: ET.Element, keywords: list[str], scores: dict[str, float], model: str, digest: str
) -> ET.Element:
    """Put edgenn's keywords into an XMP tree, keeping everything else that is there.

    Keywords edgenn wrote before (listed in ``edgenn:Keywords``) are removed from ``dc:subject``
    and ``lr:hierarchicalSubject`` first, so a rerun updates rather than duplicates; every other
    keyword, property and namespace stays as it was.

    Args:
        root: The parsed sidecar.
        keywords: Labels to write.
        scores: Label -> score of the top-k.
        model: Model file name.
        digest: Model hash.

    Returns:
        The same tree, updated.
    """
    rdf = root if root.tag == _q("rdf", "RDF") else root.find(_q("rdf", "RDF"))
    if rdf is None:
        rdf = ET.SubElement(root, _q("rdf", "RDF"))
    descriptions = rdf.findall(_q("rdf", "Description"))
    if not descriptions:
        desc = ET.SubElement(rdf, _q("rdf", "Description"))
        desc.set(_q("rdf", "about"), "")
        descriptions = [desc]
    # Write where dc:subject already lives, so that one description keeps all keywords.
    desc = next(
        (d for d in descriptions if d.find(_q("dc", "subject")) is not None), descriptions[0]
    )
    previous = set()
    for d in descriptions:
        previous.update(_bag_items(d.find(_q("edgenn", "Keywords"))))
        for attr in [a for a in d.attrib if a.startswith(f"{{{NS['edgenn']}}}")]:
            del d.attrib[attr]  # an older attribute form of edgenn's properties
        for child in [c for c in d if c.tag.startswith(f"{{{NS['edgenn']}}}")]:
            d.remove(child)
    subjects = [s for s in _bag_items(desc.find(_q("dc", "subject"))) if s not in previous]
    subjects += [k for k in keywords if k not in subjects]
    hierarchy = [
        h
        for h in _bag_items(desc.find(_q("lr", "hierarchicalSubject")))
        if not h.startswith(f"{HIERARCHY_ROOT}|")
    ]
    hierarchy += [f"{HIERARCHY_ROOT}|{k}" for k in keywords]
    _set_bag(desc, _q("dc", "subject"), subjects)
    _set_bag(desc, _q("lr", "hierarchicalSubject"), hierarchy)
    _set_bag(desc, _q("edgenn", "Keywords"), keywords)
    _set_bag(desc, _q("edgenn", "Scores"), [f"{k}={v:.4f}" for k, v in scores.items()], "Seq")
    ET.SubElement(desc, _q("edgenn", "Model")).text = model
    ET.SubElement(desc, _q("edgenn", "ModelHash")).text = digest
    return root


def write_sidecar(path: Path, root: ET.Element, namespaces: dict[str, str]) -> None:
    """Serialize and write a sidecar atomically (temp file, fsync, rename).

    Args:
        path: The sidecar.
        root: The tree.
        namespaces: Prefixes to keep as the original file declared them.
    """
    _register_namespaces(namespaces)
    ET.indent(root, space=" ")
    body = ET.tostring(root, encoding="unicode")
    text = (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        + body
        + '\n<?xpacket end="w"?>\n'
    )
    atomic_write_text(path, text)


# ------------------------------------------------------------------------------------------ run


def _prefetch(
    fn: Callable[[Path], Any], items: list[Path], workers: int
) -> Iterator[tuple[Path, Any]]:
    """Apply ``fn`` in a thread pool, yielding results in order, at most 4x``workers`` ahead."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        window = collections.deque()
        it = iter(items)
        for item in it:
            window.append((item, pool.submit(fn, item)))
            if len(window) >= 4 * workers:
                break
        while window:
            item, future = window.popleft()
            nxt = next(it, None)
            if nxt is not None:
                window.append((nxt, pool.submit(fn, nxt)))
            try:
                yield item, future.result()
            except EdgennError as exc:
                yield item, exc


def tag(
    model: Path,
    photos: list[Path],
    top_k: int = 3,
    threshold: float = 0.5,
    fmt: str = "xmp",
    sidecar: str = "ext",
    retag: bool = False,
    dry_run: bool = False,
    output: Path | None = None,
    workers: int | None = None,
    threads: int | None = None,
    progress: Callable[[int, int, float], None] | None = None,
    warn: Callable[[str], None] | None = None,
) -> tuple[TagSummary, list[PhotoResult]]:
    """Tag photos.

    Args:
        model: The .tflite classifier.
        photos: Photo files (see :func:`find_photos`).
        top_k: Labels considered per photo.
        threshold: Minimum score for a label to become a keyword.
        fmt: ``xmp`` sidecars, or one ``json`` / ``csv`` manifest.
        sidecar: ``ext`` (photo.jpg.xmp) or ``replace`` (photo.xmp).
        retag: Tag photos already tagged by this model again.
        dry_run: Compute everything, write nothing.
        output: Manifest path for json/csv (default ``edgenn-tags.<fmt>`` in the working folder).
        workers: Decoding threads (default: the CPU count).
        threads: Interpreter threads.
        progress: ``progress(done, total, photos_per_second)``.
        warn: Called with one line per photo that failed.

    Returns:
        ``(summary, per-photo results)``.

    Raises:
        UsageError: Bad option values.
        EdgennError: The model cannot be used.
    """
    if fmt not in FORMATS:
        raise UsageError(f"Unknown --format {fmt!r}; expected one of {', '.join(FORMATS)}.")
    if sidecar not in SIDECAR_STYLES:
        raise UsageError(
            f"Unknown --sidecar {sidecar!r}; expected one of {', '.join(SIDECAR_STYLES)}."
        )
    if not 0 <= threshold <= 1:
        raise UsageError(f"--threshold must be between 0 and 1; received {threshold}.")
    _enable_heif()
    classifier = Classifier(model, threads=threads)
    digest = model_hash(model)
    model_name = Path(model).name
    manifest_path = Path(output) if output else Path.cwd() / f"edgenn-tags.{fmt}"
    manifest: dict[str, dict[str, Any]] = {}
    if fmt != "xmp" and manifest_path.exists() and not retag:
        manifest = _read_manifest(manifest_path, fmt)
    results: list[PhotoResult] = []
    todo = []
    for photo in photos:
        done_before = (
            sidecar_model_hash(sidecar_path(photo, sidecar)) == digest
            if fmt == "xmp"
            else manifest.get(str(photo), {}).get("model_hash") == digest
        )
        if done_before and not retag:
            results.append(PhotoResult(str(photo), "skipped"))
        else:
            todo.append(photo)
    if fmt == "xmp" and not dry_run:
        _remove_stale_temp_files(todo, sidecar)
    start = time.perf_counter()
    workers = workers or os.cpu_count() or 2
    for done, (photo, pixels) in enumerate(
        _prefetch(lambda p: decode(p, classifier.spec), todo, workers), 1
    ):
        if isinstance(pixels, EdgennError):
            result = PhotoResult(str(photo), "failed", error=pixels.message)
            if warn:
                warn(f"edgenn: warning: {pixels.message}")
        else:
            top, _ = classifier.classify_pixels(pixels, top_k)
            scores = {t.label: round(float(t.score), 4) for t in top}
            keywords = [t.label for t in top if t.score >= threshold]
            result = PhotoResult(str(photo), "tagged", keywords, scores)
            try:
                if fmt == "xmp":
                    path = sidecar_path(photo, sidecar)
                    result.sidecar = str(path)
                    if not dry_run:
                        root, namespaces = read_sidecar(path)
                        write_sidecar(
                            path, merge_tags(root, keywords, scores, model_name, digest), namespaces
                        )
                else:
                    manifest[str(photo)] = {
                        "keywords": keywords,
                        "scores": scores,
                        "model": model_name,
                        "model_hash": digest,
                    }
            except (EdgennError, OSError) as exc:
                message = exc.message if isinstance(exc, EdgennError) else f"{photo}: {exc}"
                result = PhotoResult(str(photo), "failed", error=message)
                if warn:
                    warn(f"edgenn: warning: {message}")
        results.append(result)
        if fmt != "xmp" and not dry_run and done % 200 == 0:
            _write_manifest(manifest_path, manifest, fmt)  # progress survives a kill
        if progress:
            elapsed = time.perf_counter() - start
            progress(done, len(todo), done / elapsed if elapsed > 0 else 0.0)
    if fmt != "xmp" and not dry_run:
        _write_manifest(manifest_path, manifest, fmt)
    seconds = time.perf_counter() - start
    counts = collections.Counter(r.status for r in results)
    per_label = collections.Counter(k for r in results for k in r.keywords)
    summary = TagSummary(
        model=str(model),
        model_hash=digest,
        photos=len(results),
        tagged=counts["tagged"],
        skipped=counts["skipped"],
        failed=counts["failed"],
        per_label=dict(per_label.most_common()),
        seconds=round(seconds, 3),
        photos_per_second=round(counts["tagged"] / seconds, 2) if seconds > 0 else 0.0,
        failures=[
            {"photo": r.photo, "error": r.error or ""} for r in results if r.status == "failed"
        ],
        dry_run=dry_run,
        output=str(manifest_path) if fmt != "xmp" else None,
    )
    return summary, results


def _remove_stale_temp_files(photos: list[Path], style: str) -> None:
    """Delete temp files a killed run left beside sidecars (ours only: ``.NAME.xmp.*.tmp``)."""
    for folder, names in _group_by_folder(photos, style).items():
        for stale in folder.glob(".*.xmp.*.tmp"):
            if any(stale.name.startswith(f".{name}.") for name in names):
                stale.unlink(missing_ok=True)


def _group_by_folder(photos: list[Path], style: str) -> dict[Path, set[str]]:
    groups: dict[Path, set[str]] = collections.defaultdict(set)
    for photo in photos:
        side = sidecar_path(photo, style)
        groups[side.parent].add(side.name)
    return groups


def _read_manifest(path: Path, fmt: str) -> dict[str, dict[str, Any]]:
    try:
        if fmt == "json":
            return {item["photo"]: item for item in json.loads(path.read_text())["photos"]}
        rows = csv.DictReader(io.StringIO(path.read_text()))
        return {
            r["photo"]: {"keywords": [k for k in r["keywords"].split(";") if k], "scores": json.loads(r["scores"]),
                         "model": r["model"], "model_hash": r["model_hash"]}
            for r in rows
        }  # fmt: skip
    except (OSError, ValueError, KeyError) as exc:
        raise EdgennError(
            f"{path} is not an edgenn {fmt} manifest ({exc}); move it away or pass --retag"
        ) from None


def _write_manifest(path: Path, manifest: dict[str, dict[str, Any]], fmt: str) -> None:
    items = [{"photo": photo, **entry} for photo, entry in sorted(manifest.items())]
    if fmt == "json":
        atomic_write_text(path, json.dumps({"photos": items}, indent=1) + "\n")
        return
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["photo", "keywords", "scores", "model", "model_hash"])
    for item in items:
        writer.writerow(
            [
                item["photo"],
                ";".join(item["keywords"]),
                json.dumps(item["scores"]),
                item["model"],
                item["model_hash"],
            ]
        )
    atomic_write_bytes(path, buf.getvalue().encode("utf-8"))


def progress_printer(stream=None) -> Callable[[int, int, float], None]:
    """A progress bar with photos per second and ETA on stderr (a line per 10% off a terminal)."""
    stream = stream or sys.stderr
    tty = stream.isatty()
    state = {"last": 0.0, "decile": -1}

    def show(done: int, total: int, rate: float) -> None:
        now = time.perf_counter()
        decile = int(10 * done / max(total, 1))
        if tty and now - state["last"] < 0.2 and done < total:
            return
        if not tty and decile == state["decile"] and done < total:
            return
        state["last"], state["decile"] = now, decile
        eta = (total - done) / rate if rate > 0 else 0.0
        bar = "#" * int(30 * done / max(total, 1))
        line = f"tag [{bar:<30}] {done}/{total} {rate:.1f} photos/s ETA {eta:.0f}s"
        stream.write(("\r\x1b[K" if tty else "") + line + ("" if tty and done < total else "\n"))
        stream.flush()

    return show
