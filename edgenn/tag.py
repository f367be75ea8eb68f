"""[device] Tag photos with a model: XMP keywords that photo managers read; not one photo harmed.

Each photo is decoded, classified, and its keywords written to an XMP sidecar (see
:mod:`edgenn.xmp`: merged into an existing one, never replacing it) or to one json/csv manifest.
Photos are only ever opened for reading. A rerun skips photos whose sidecar (or manifest entry)
already holds tags from the same model (by the model's hash), so a run killed halfway finishes on
the next run. Photos that would share one sidecar (``img.jpg`` and ``img.png`` with ``--sidecar
replace``) are refused, each with a one-line reason, on every run.

Photos become model input through :func:`edgenn.preprocess.load_pixels`, exactly as in training,
predict and camera (a large JPEG is decoded at reduced scale there, which keeps tagging fast).
Decoding (the slow part on a Pi) runs in a thread pool while the interpreter runs. The library
never prints: progress and per-photo failures go to the ``progress`` and ``warn`` callbacks.
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
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgenn import classify, preprocess, xmp
from edgenn.errors import EdgennError, UsageError
from edgenn.fileio import atomic_write_bytes, atomic_write_text, read_regular
from edgenn.predict import Classifier
from edgenn.preprocess import IMAGE_SUFFIXES

#: The image types edgenn reads anywhere, less GIF (not a photo format), plus HEIC/HEIF (read
#: when pillow-heif is installed).
PHOTO_SUFFIXES = (IMAGE_SUFFIXES - {".gif"}) | {".heic", ".heif"}
#: Formats that write one manifest for all photos (rather than a sidecar per photo).
MANIFEST_FORMATS = ("json", "csv")
#: Where the keywords go: XMP sidecars per photo, or one manifest for all.
FORMATS = ("xmp", *MANIFEST_FORMATS)
DEFAULT_FORMAT = "xmp"
#: Labels considered per photo.
DEFAULT_TOP_K = classify.DEFAULT_TOP_K
#: Minimum score for a label to become a keyword.
DEFAULT_THRESHOLD = 0.5
#: A manifest's columns (csv) and keys (json), in order.
MANIFEST_FIELDS = ("photo", "keywords", "scores", "model", "model_hash")
#: A json/csv manifest is saved every this many photos, so that a killed run loses little.
MANIFEST_SAVE_EVERY = 200

#: ``progress(done, total, photos_per_second)`` after each photo.
Progress = Callable[[int, int, float], None]
#: ``warn(message)`` once per photo that failed.
Warn = Callable[[str], None]


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
    """First 16 hex digits of the model file's SHA-256 (identifies "the same model").

    Raises:
        EdgennError: The model is not a regular file (or is too large).
    """
    return hashlib.sha256(read_regular(path, "a .tflite model")).hexdigest()[:16]


def find_photos(paths: Iterable[Path], recursive: bool = False) -> list[Path]:
    """Photo files among the given files and folders (folders walked with ``recursive``).

    Args:
        paths: Files and folders.
        recursive: Walk sub-folders.

    Returns:
        Sorted, unique photo paths. A path given that is neither a folder nor a regular file (a
        FIFO, a dangling link, a symlink loop) is kept: it becomes one failed photo with its
        reason, and the run goes on.

    Raises:
        EdgennError: A path does not exist at all.
    """
    found = []
    for path in map(Path, paths):
        if path.is_dir():
            pattern = path.rglob("*") if recursive else path.glob("*")
            found.extend(p for p in pattern if p.is_file() and _is_photo_name(p.name))
        elif os.path.lexists(path):
            found.append(path)
        else:
            raise EdgennError(f"{path} does not exist.")
    return sorted(dict.fromkeys(found))


def _is_photo_name(name: str) -> bool:
    return Path(name).suffix.lower() in PHOTO_SUFFIXES and not name.startswith(".")


def sidecar_collisions(photos: Iterable[Path], style: str) -> dict[Path, list[Path]]:
    """Photos whose sidecar another photo would share: ``{photo: the other photos}``.

    With style ``replace``, ``img.jpg`` and ``img.png`` both map to ``img.xmp``; one photo's
    keywords would overwrite the other's, and the next run would take both as done. The other
    photos are looked for among those given and beside each photo in its folder.

    Args:
        photos: The photos to tag.
        style: One of :data:`edgenn.xmp.SIDECAR_STYLES`.

    Returns:
        Each photo that shares its sidecar, with the photos it shares it with (empty for ``ext``,
        where a sidecar is named after the whole file name).
    """
    photos = list(photos)
    if style == "ext":
        return {}
    owners: dict[Path, set[Path]] = collections.defaultdict(set)
    for folder in {photo.parent for photo in photos}:
        try:
            entries = [e for e in os.scandir(folder) if _is_photo_name(e.name) and e.is_file()]
        except OSError:
            entries = []  # an unreadable folder: its photos fail on their own
        for entry in entries:
            owners[xmp.sidecar_path(folder / entry.name, style)].add(folder / entry.name)
    for photo in photos:
        owners[xmp.sidecar_path(photo, style)].add(photo)
    shared = {}
    for photo in photos:
        others = owners[xmp.sidecar_path(photo, style)] - {photo}
        if others:
            shared[photo] = sorted(others)
    return shared


def _collision_result(photo: Path, others: list[Path], style: str) -> PhotoResult:
    side = xmp.sidecar_path(photo, style)
    names = ", ".join(p.name for p in others)
    return PhotoResult(
        str(photo),
        "failed",
        error=f"{photo}: --sidecar {style} would write {side} for {names} too, so neither is "
        f"tagged; use --sidecar ext ({photo.name}.xmp) or rename one of them",
    )


def _prefetch(
    fn: Callable[[Path], Any], items: list[Path], workers: int
) -> Iterator[tuple[Path, Any]]:
    """Apply ``fn`` in a thread pool, yielding results in order, at most 4x``workers`` ahead.

    An :class:`EdgennError` raised by ``fn`` is yielded in place of its result.
    """
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


# ------------------------------------------------------------------------------------------ run


@dataclasses.dataclass
class _Run:
    """What every step of one tagging run shares."""

    classifier: Classifier
    model_name: str
    digest: str
    top_k: int
    threshold: float
    fmt: str
    sidecar: str
    dry_run: bool
    manifest_path: Path
    manifest: dict[str, dict[str, Any]]

    @classmethod
    def start(cls, model: Path, threads: int | None, output: Path | None, **settings: Any) -> _Run:
        """Load the model and the manifest a previous run left (xmp: none).

        The manifest is read even to retag: its other photos' entries are kept, and a file there
        that is not an edgenn manifest is refused rather than replaced.

        Args:
            model: The .tflite classifier.
            threads: Interpreter threads.
            output: Manifest path (None: ``edgenn-tags.<fmt>`` in the working folder).
            **settings: The remaining fields, ``top_k`` to ``dry_run``.

        Raises:
            EdgennError: The manifest path is a folder, or holds a file that is not an edgenn
                manifest of this format.
        """
        fmt = settings["fmt"]
        manifest_path = Path(output) if output else Path.cwd() / f"edgenn-tags.{fmt}"
        if fmt != "xmp" and manifest_path.is_dir():
            raise EdgennError(f"{manifest_path} is a folder; expected the {fmt} manifest's file.")
        return cls(
            classifier=Classifier(model, threads=threads),
            model_name=Path(model).name,
            digest=model_hash(model),
            manifest_path=manifest_path,
            manifest={} if fmt == "xmp" else _read_manifest(manifest_path, fmt),
            **settings,
        )

    @property
    def writes_manifest(self) -> bool:
        """Whether a json/csv manifest is written (not for xmp, nor in a dry run)."""
        return self.fmt != "xmp" and not self.dry_run


def tag(
    model: Path,
    photos: list[Path],
    top_k: int = DEFAULT_TOP_K,
    threshold: float = DEFAULT_THRESHOLD,
    fmt: str = DEFAULT_FORMAT,
    sidecar: str = xmp.DEFAULT_SIDECAR_STYLE,
    retag: bool = False,
    dry_run: bool = False,
    output: Path | None = None,
    workers: int | None = None,
    threads: int | None = None,
    progress: Progress | None = None,
    warn: Warn | None = None,
) -> tuple[TagSummary, list[PhotoResult]]:
    """Tag photos.

    Args:
        model: The .tflite classifier.
        photos: Photo files (see :func:`find_photos`).
        top_k: Labels considered per photo.
        threshold: Minimum score for a label to become a keyword.
        fmt: One of :data:`FORMATS`: ``xmp`` sidecars, or one ``json`` / ``csv`` manifest.
        sidecar: One of :data:`edgenn.xmp.SIDECAR_STYLES`: ``ext`` (photo.jpg.xmp) or
            ``replace`` (photo.xmp).
        retag: Tag photos already tagged by this model again.
        dry_run: Compute everything, write nothing.
        output: Manifest path for json/csv (default ``edgenn-tags.<fmt>`` in the working folder).
        workers: Decoding threads (default: the CPU count).
        threads: Interpreter threads.
        progress: ``progress(done, total, photos_per_second)`` after each photo.
        warn: Called with the reason of each photo that failed (one line, no prefix).

    Returns:
        ``(summary, per-photo results)``: photos refused for sharing a sidecar and photos skipped
        as already tagged first, then the others in the order given.

    Raises:
        UsageError: Bad option values.
        EdgennError: The model cannot be used (damaged, not a classifier, labels that do not fit
            its outputs), or an existing manifest is not edgenn's.
    """
    _check_options(fmt, sidecar, top_k, threshold)
    settings = dict(top_k=top_k, threshold=threshold, fmt=fmt, sidecar=sidecar, dry_run=dry_run)
    run = _Run.start(model, threads, output, **settings)
    refused, photos = _refuse_shared_sidecars(run, photos, warn)
    skipped, todo = _split_done(run, photos, retag)
    if fmt == "xmp" and not dry_run:
        xmp.remove_stale_temp_files(xmp.sidecar_path(p, sidecar) for p in todo)
    start = time.perf_counter()
    tagged = _tag_all(run, todo, workers or os.cpu_count() or 2, progress, warn)
    results = refused + skipped + tagged
    if run.writes_manifest:
        _write_manifest(run.manifest_path, run.manifest, fmt)
    return _summarize(str(model), run, results, time.perf_counter() - start), results


def _check_options(fmt: str, sidecar: str, top_k: int, threshold: float) -> None:
    if fmt not in FORMATS:
        raise UsageError(f"Unknown --format {fmt!r}; expected one of {', '.join(FORMATS)}.")
    if sidecar not in xmp.SIDECAR_STYLES:
        raise UsageError(
            f"Unknown --sidecar {sidecar!r}; expected one of {', '.join(xmp.SIDECAR_STYLES)}."
        )
    if top_k < 1:
        raise UsageError(f"--top-k must be at least 1; received {top_k}.")
    if not 0 <= threshold <= 1:
        raise UsageError(f"--threshold must be between 0 and 1; received {threshold}.")


def _refuse_shared_sidecars(
    run: _Run, photos: list[Path], warn: Warn | None
) -> tuple[list[PhotoResult], list[Path]]:
    """``(failed results, the other photos)``: photos that would share a sidecar fail, each run."""
    shared = sidecar_collisions(photos, run.sidecar) if run.fmt == "xmp" else {}
    refused = [_collision_result(p, others, run.sidecar) for p, others in shared.items()]
    if warn:
        for result in refused:
            warn(result.error or "")
    return refused, [p for p in photos if p not in shared]


def _split_done(run: _Run, photos: list[Path], retag: bool) -> tuple[list[PhotoResult], list[Path]]:
    """``(skipped results, photos to tag)``: skipped when this model tagged them before."""
    skipped, todo = [], []
    for photo in photos:
        if not retag and _done_before(run, photo):
            skipped.append(PhotoResult(str(photo), "skipped"))
        else:
            todo.append(photo)
    return skipped, todo


def _done_before(run: _Run, photo: Path) -> bool:
    if run.fmt == "xmp":
        return xmp.sidecar_model_hash(xmp.sidecar_path(photo, run.sidecar)) == run.digest
    return run.manifest.get(str(photo), {}).get("model_hash") == run.digest


def _tag_all(
    run: _Run, todo: list[Path], workers: int, progress: Progress | None, warn: Warn | None
) -> list[PhotoResult]:
    """Decode (in a thread pool), classify and record each photo, reporting as it goes."""
    results = []
    start = time.perf_counter()
    decoded = _prefetch(lambda p: preprocess.load_pixels(p, run.classifier.spec), todo, workers)
    for done, (photo, pixels) in enumerate(decoded, 1):
        result = _tag_one(run, photo, pixels)
        if result.error and warn:
            warn(result.error)
        results.append(result)
        if run.writes_manifest and done % MANIFEST_SAVE_EVERY == 0:
            _write_manifest(run.manifest_path, run.manifest, run.fmt)  # progress survives a kill
        if progress:
            elapsed = time.perf_counter() - start
            progress(done, len(todo), done / elapsed if elapsed > 0 else 0.0)
    return results


def _tag_one(run: _Run, photo: Path, pixels: np.ndarray | EdgennError) -> PhotoResult:
    """Classify one decoded photo and record its keywords; a failure is a result, not a raise."""
    if isinstance(pixels, EdgennError):
        return PhotoResult(str(photo), "failed", error=pixels.message)
    top, _ = run.classifier.classify_pixels(pixels, run.top_k)
    scores = {t.label: round(float(t.score), 4) for t in top}
    keywords = [t.label for t in top if t.score >= run.threshold]
    result = PhotoResult(str(photo), "tagged", keywords, scores)
    try:
        _record(run, photo, result)
    except (EdgennError, OSError) as exc:
        message = exc.message if isinstance(exc, EdgennError) else f"{photo}: {exc}"
        return PhotoResult(str(photo), "failed", error=message)
    return result


def _record(run: _Run, photo: Path, result: PhotoResult) -> None:
    """Write the photo's sidecar, or add its manifest entry (written later, in batches)."""
    if run.fmt != "xmp":
        run.manifest[str(photo)] = {
            "keywords": result.keywords,
            "scores": result.scores,
            "model": run.model_name,
            "model_hash": run.digest,
        }
        return
    path = xmp.sidecar_path(photo, run.sidecar)
    result.sidecar = str(path)
    if not run.dry_run:
        xmp.update_sidecar(path, result.keywords, result.scores, run.model_name, run.digest)


def _summarize(model: str, run: _Run, results: list[PhotoResult], seconds: float) -> TagSummary:
    counts = collections.Counter(r.status for r in results)
    per_label = collections.Counter(k for r in results for k in r.keywords)
    return TagSummary(
        model=model,
        model_hash=run.digest,
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
        dry_run=run.dry_run,
        output=str(run.manifest_path) if run.fmt != "xmp" else None,
    )


# ------------------------------------------------------------------------------------ manifests


def _csv_entry(row: dict[str, str]) -> dict[str, Any]:
    return {
        "keywords": [k for k in row["keywords"].split(";") if k],
        "scores": json.loads(row["scores"]),
        "model": row["model"],
        "model_hash": row["model_hash"],
    }


def _read_manifest(path: Path, fmt: str) -> dict[str, dict[str, Any]]:
    """Photo -> entry of a manifest a previous run wrote ({} when there is none).

    Raises:
        EdgennError: The file is not an edgenn manifest of this format.
    """
    if not os.path.lexists(path):
        return {}
    data = read_regular(path, f"an edgenn {fmt} manifest")
    try:
        text = data.decode("utf-8")
        if fmt == "json":
            return {item["photo"]: item for item in json.loads(text)["photos"]}
        rows = csv.DictReader(io.StringIO(text))
        return {row["photo"]: _csv_entry(row) for row in rows}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise EdgennError(
            f"{path} is not an edgenn {fmt} manifest ({exc}); move it away or choose another --output"
        ) from None


def _write_manifest(path: Path, manifest: dict[str, dict[str, Any]], fmt: str) -> None:
    items = [{"photo": photo, **entry} for photo, entry in sorted(manifest.items())]
    if fmt == "json":
        atomic_write_text(path, json.dumps({"photos": items}, indent=1) + "\n")
        return
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(MANIFEST_FIELDS)
    for item in items:
        row = {**item, "keywords": ";".join(item["keywords"]), "scores": json.dumps(item["scores"])}
        writer.writerow([row[field] for field in MANIFEST_FIELDS])
    atomic_write_bytes(path, buf.getvalue().encode("utf-8"))
