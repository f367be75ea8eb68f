"""Fuzzing the device commands: mutated real models and photos through inspect, predict and tag.

Every input runs through the real command line (``edgenn.cli.main`` in click's standalone mode,
stdout and stderr captured at the file-descriptor level) in a child process with a time limit and
an address-space limit (``RLIMIT_AS``). Many inputs share one child; a child that dies or stops
answering is replaced and the input that killed it is recorded. Each run gets a verdict:

- ``ok``: exit 0 and nothing on stderr (tag's progress lines aside);
- ``failed``: exit 1 and exactly one ``edgenn: error:`` line per failed input (``edgenn:
  warning:`` for a photo tag could not read; none for ``inspect --target``, whose table on stdout
  says why the model cannot run on the target);
- ``crash``: a traceback, or a death by signal;
- ``hang``: over the time limit;
- ``noisy``: anything else (several lines, a warning, another exit code).

The suite runs a fixed-seed sample; ``benchmarks/fuzz.py`` runs 10,000 models and 1,000 photos
through the same functions.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import random
import select
import signal
import struct
import subprocess
import sys
import time
import zlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .conftest import MODELS, REPO, SAMPLES

#: Verdicts, in the order the summary shows them.
VERDICTS = ("ok", "failed", "crash", "hang", "noisy")
#: The edgenn models the cases start from (labels and recipe embedded).
EDGENN_MODELS = sorted((REPO / "tests" / "data").glob("*.tflite"))
#: MediaPipe's models, given an embedded recipe so that predict and tag run them too.
THIRD_PARTY = ["face_detection_short_range", "selfie_segmentation", "hand_landmark_lite"]
#: Per-run limits of the child: as a small device would impose them.
TIME_LIMIT_S = 20.0
MEMORY_LIMIT = 2 * 2**30

# The child: reads one JSON list of runs, answers one JSON line per run on its own stdout.
DRIVER = r"""
import json, os, sys, tempfile, traceback
from edgenn.cli import main
answer = os.fdopen(os.dup(1), "w", buffering=1)
answer.write("ready\n")
for line in sys.stdin:
    run = json.loads(line)
    answer.write(json.dumps({"start": run["id"]}) + "\n")
    for module in list(sys.modules.values()):  # each run sees its warnings, as its own process
        registry = getattr(module, "__warningregistry__", None)
        if isinstance(registry, dict):
            registry.clear()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        sys.stdout.flush(); sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        os.dup2(out.fileno(), 1); os.dup2(err.fileno(), 2)
        try:
            main(run["args"], prog_name="edgenn", standalone_mode=True)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush(); sys.stderr.flush()
        os.dup2(saved[0], 1); os.dup2(saved[1], 2)
        os.close(saved[0]); os.close(saved[1])
        err.seek(0)
        text = err.read().decode("utf-8", "replace")
    answer.write(json.dumps({"id": run["id"], "code": code, "stderr": text}) + "\n")
"""


@dataclasses.dataclass
class Case:
    """One run of the command line.

    Attributes:
        id: Position in the list.
        kind: ``model`` or ``photo``.
        mutation: What was done to the input.
        args: The command line after ``edgenn``.
        inputs: Inputs the run handles (each failed one may say one line).
    """

    id: int
    kind: str
    mutation: str
    args: list[str]
    inputs: int = 1


@dataclasses.dataclass
class Outcome:
    """A case's verdict, with its exit code and stderr."""

    case: Case
    verdict: str
    code: int | None
    stderr: str
    seconds: float


# --- Models ------------------------------------------------------------------------------------


def _schema():
    from ai_edge_litert import schema_py_generated as schema

    return schema


def _pack(model) -> bytes:
    import flatbuffers

    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


_INTS = [0, 1, 2, 3, 7, 255, 256, 65535, 65536, 2**20, 2**24, 2**31 - 1, -1, -2, -5, -(2**31)]
_JSON_VALUES = [None, "", "abc", "L", "RGB", 0, -1, 1.5, 1e308, float("nan"), float("inf"), True]
_JSON_VALUES += [
    [],
    [1],
    [28],
    [-5, 28, 1],
    [0, 0, 0],
    [28.5, 28, 1],
    [10**6, 10**6, 1],
    {},
    "x" * 5000,
]


def _int32(values) -> np.ndarray:
    return np.array([int(v) for v in values], dtype=np.int64).astype(np.int32)


def _tensor_shape(model, rng: random.Random) -> str:
    sg = model.subgraphs[0]
    pick = rng.choice(["input", "output", "any"])
    index = {"input": sg.inputs[0], "output": sg.outputs[0]}.get(pick)
    if index is None:
        index = rng.randrange(len(sg.tensors))
    tensor = sg.tensors[index]
    shape = [int(d) for d in tensor.shape] if tensor.shape is not None else []
    if shape and rng.random() < 0.8:
        shape[rng.randrange(len(shape))] = rng.choice(_INTS)
    else:
        shape = [rng.choice(_INTS[:9]) for _ in range(rng.choice([0, 1, 2, 5, 7, 20]))]
    tensor.shape = _int32(shape)
    if rng.random() < 0.7:
        tensor.shapeSignature = None
    return f"{pick} tensor {index} shape {shape}"


def _tensor_field(model, rng: random.Random) -> str:
    sg = model.subgraphs[rng.randrange(len(model.subgraphs))]
    tensor = sg.tensors[rng.randrange(len(sg.tensors))]
    field = rng.choice(["type", "buffer", "isVariable", "shapeSignature"])
    if field == "type":
        tensor.type = rng.randrange(-2, 22)
    elif field == "buffer":
        tensor.buffer = rng.choice([0, 1, len(model.buffers) - 1, len(model.buffers), 10**6])
    elif field == "isVariable":
        tensor.isVariable = not tensor.isVariable
    else:
        tensor.shapeSignature = _int32([rng.choice(_INTS) for _ in range(rng.randrange(6))])
    return f"tensor {field}"


def _quantization(model, rng: random.Random) -> str:
    sg = model.subgraphs[0]
    tensor = sg.tensors[rng.choice([sg.inputs[0], sg.outputs[0], rng.randrange(len(sg.tensors))])]
    schema = _schema()
    q = tensor.quantization or schema.QuantizationParametersT()
    value = rng.choice([0.0, -1.0, float("nan"), float("inf"), 1e-45, 1e38, 2.0])
    q.scale = np.array([value] * rng.choice([1, 2, 1000]), dtype=np.float32)
    q.zeroPoint = np.array([rng.choice(_INTS)] * len(q.scale), dtype=np.int64)
    q.quantizedDimension = rng.choice([0, 3, 99, -1])
    tensor.quantization = q
    return f"quantization scale {value}"


def _buffer(model, rng: random.Random) -> str:
    candidates = [i for i, b in enumerate(model.buffers) if b.data is not None and len(b.data)]
    if not candidates:
        return "no buffer"
    buf = model.buffers[rng.choice(candidates)]
    how = rng.choice(["truncate", "extend", "randomize", "empty", "nan"])
    data = np.asarray(buf.data, dtype=np.uint8)
    if how == "truncate":
        data = data[: rng.randrange(len(data))]
    elif how == "extend":
        data = np.concatenate([data, np.zeros(rng.choice([1, 4, 4096]), np.uint8)])
    elif how == "randomize":
        data = np.frombuffer(rng.randbytes(len(data)), np.uint8)
    elif how == "nan":
        data = np.frombuffer(
            np.full(max(len(data) // 4, 1), np.nan, np.float32).tobytes(), np.uint8
        )
    else:
        data = None
    buf.data = data
    return f"buffer {how}"


def _operator(model, rng: random.Random) -> str:
    sg = model.subgraphs[0]
    op = sg.operators[rng.randrange(len(sg.operators))]
    field = rng.choice(["opcodeIndex", "inputs", "outputs", "options", "options", "options"])
    if field == "opcodeIndex":
        op.opcodeIndex = rng.choice([0, len(model.operatorCodes) - 1, len(model.operatorCodes)])
    elif field in ("inputs", "outputs"):
        values = list(getattr(op, field) if getattr(op, field) is not None else [])
        choice = rng.choice([-1, 0, len(sg.tensors) - 1, len(sg.tensors), 2**31 - 1])
        if values:
            values[rng.randrange(len(values))] = choice
        setattr(op, field, _int32(values if rng.random() < 0.8 else values[:-1]))
    else:
        options = op.builtinOptions
        names = (
            [k for k, v in vars(options).items() if isinstance(v, (int, float))] if options else []
        )
        if not names:
            return "operator without options"
        field = rng.choice(names)
        setattr(options, field, rng.choice(_INTS))
    return f"operator {op.opcodeIndex} {field}"


def _operator_code(model, rng: random.Random) -> str:
    code = model.operatorCodes[rng.randrange(len(model.operatorCodes))]
    field = rng.choice(["builtinCode", "version", "deprecatedBuiltinCode"])
    if field == "builtinCode":
        code.builtinCode = rng.choice([0, 3, 32, 127, 150, 205, 10000])
    elif field == "version":
        code.version = rng.choice([0, 999, -1])
    else:
        code.deprecatedBuiltinCode = rng.choice([0, 32, 127, -1])
    return f"operator code {field}"


def _graph_io(model, rng: random.Random) -> str:
    sg = model.subgraphs[0]
    field = rng.choice(["inputs", "outputs"])
    values = [int(v) for v in getattr(sg, field)]
    how = rng.choice(["empty", "duplicate", "out of range", "swap"])
    if how == "empty":
        values = []
    elif how == "duplicate":
        values = values * 2
    elif how == "out of range":
        values[0] = rng.choice([-1, len(sg.tensors), 10**6])
    else:
        values[0] = rng.randrange(len(sg.tensors))
    setattr(sg, field, _int32(values))
    return f"graph {field} {how}"


def _metadata_doc(model, rng: random.Random) -> str:
    from edgenn import artifact

    names = (artifact.METADATA_ENTRY, artifact.METADATA_ENTRY.encode())
    entry = next((m for m in model.metadata or [] if m.name in names), None)
    if entry is None:
        return "no metadata"
    buf = model.buffers[entry.buffer]
    raw = bytes(np.asarray(buf.data, np.uint8))
    if rng.random() < 0.2:
        payload = rng.choice([raw[: rng.randrange(len(raw))], b"\xff\xfe" + raw, b"[" * 50_000])
        how = "raw"
    else:
        doc = json.loads(raw)
        recipe = doc.setdefault("preprocess", {})
        target, key = rng.choice(
            [(doc, "labels"), (doc, "format"), (doc, "preprocess")]
            + [(recipe, k) for k in ("kind", "input_shape", "color_mode", "resize", "scale")]
            + [(recipe, k) for k in ("offset", "task", "version", "mean", "std")]
        )
        if rng.random() < 0.15:
            target.pop(key, None)
        elif key == "labels" and rng.random() < 0.5:
            target[key] = [f"c{i}" for i in range(rng.choice([0, 1, 2, 3, 9, 11, 1000]))]
        else:
            target[key] = rng.choice(_JSON_VALUES)
        payload, how = json.dumps(doc).encode(), f"{key}"
    buf.data = np.frombuffer(payload, np.uint8) if payload else None
    return f"metadata {how}"


#: Structured mutations: each edits the decoded model and says what it did.
STRUCTURED: list[Callable[[object, random.Random], str]] = [
    _tensor_shape,
    _tensor_shape,
    _tensor_field,
    _quantization,
    _buffer,
    _operator,
    _operator,
    _operator_code,
    _graph_io,
    _metadata_doc,
    _metadata_doc,
]


def _byte_level(raw: bytes, rng: random.Random) -> tuple[str, bytes]:
    data = bytearray(raw)
    how = rng.choice(["flip", "flip", "header", "root", "truncate", "splice", "word"])
    if how == "flip":
        for _ in range(rng.choice([1, 2, 5, 30])):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif how == "header":
        data[rng.randrange(8)] = rng.randrange(256)
    elif how == "root":
        data[0:4] = struct.pack("<I", rng.choice([0, 4, 8, len(data) - 4, len(data), 2**31]))
    elif how == "truncate":
        data = data[: rng.randrange(len(data))]
    elif how == "splice":
        start = rng.randrange(len(data))
        data[start:start] = data[rng.randrange(len(data)) :][: rng.randrange(1, 512)]
    else:
        # A plausible offset or length somewhere: the kind of damage a flatbuffer trusts most.
        at = rng.randrange(0, len(data) - 4) & ~3
        data[at : at + 4] = struct.pack("<i", rng.choice(_INTS))
    return f"bytes {how}", bytes(data)


def mutate_model(raw: bytes, rng: random.Random) -> tuple[str, bytes]:
    """A damaged or crafted variant of a model: half through the schema, half at the byte level.

    Args:
        raw: The model's bytes.
        rng: The random source (seeded by the caller).

    Returns:
        ``(what was done, the new bytes)``.
    """
    if rng.random() < 0.45:
        return _byte_level(raw, rng)
    schema = _schema()
    model = schema.ModelT.InitFromPackedBuf(bytearray(raw), 0)
    what = rng.choice(STRUCTURED)(model, rng)
    try:
        return what, _pack(model)
    except (struct.error, TypeError, ValueError, OverflowError):
        return _byte_level(raw, rng)


def base_models(folder: Path) -> list[Path]:
    """The real models the mutations start from: edgenn's test models and MediaPipe's.

    MediaPipe's get an embedded recipe (no labels), so that predict and tag run them too.
    """
    from edgenn import artifact, tflite_model
    from edgenn.preprocess import PreprocessSpec

    folder.mkdir(parents=True, exist_ok=True)
    paths = list(EDGENN_MODELS)
    for name in THIRD_PARTY:
        raw = (MODELS / f"{name}.tflite").read_bytes()
        _, height, width, _ = tflite_model.load(raw).input_details[0].shape
        spec = PreprocessSpec.for_images(height, width, "RGB")
        path = folder / f"{name}.tflite"
        path.write_bytes(artifact.embed(raw, [], spec))
        paths.append(path)
    return paths


def special_models(folder: Path) -> list[Path]:
    """Model paths that are not regular files, and one file larger than edgenn reads.

    A FIFO, a link to /dev/zero, a folder, a symlink loop, a dangling link; the large file is
    sparse (no disk used).
    """
    from edgenn import tflite_model

    folder.mkdir(parents=True, exist_ok=True)
    paths = {name: folder / f"{name}.tflite" for name in ("fifo", "zero", "dir", "loop", "gone")}
    os.mkfifo(paths["fifo"])
    paths["zero"].symlink_to("/dev/zero")
    paths["dir"].mkdir()
    paths["loop"].symlink_to(paths["loop"])
    paths["gone"].symlink_to(folder / "nothing.tflite")
    huge = folder / "huge.tflite"
    with open(huge, "wb") as fh:
        fh.truncate(tflite_model.MAX_MODEL_BYTES + 1)
    return [*paths.values(), huge]


# --- Photos ------------------------------------------------------------------------------------


def base_photos() -> dict[str, bytes]:
    """Real photos in the formats a camera or phone writes, from the Fashion-MNIST samples."""
    from PIL import Image

    samples = sorted(SAMPLES.glob("*/*.jpg"))[::60]
    pictures = [Image.open(p).convert("RGB").resize((160, 120)) for p in samples]
    out: dict[str, bytes] = {}
    for i, img in enumerate(pictures):
        buf = io.BytesIO()
        exif = Image.Exif()
        exif[0x0112] = 1 + i % 8  # every EXIF orientation
        img.save(buf, "JPEG", quality=85, exif=exif, progressive=i % 2 == 0)
        out[f"photo{i}.jpg"] = buf.getvalue()
        variants = {
            "png": img.convert("RGBA"),
            "gif": img.convert("P"),
            "bmp": img,
            "webp": img,
            "tif": img.convert("CMYK"),
        }
        for suffix, variant in variants.items():
            buf = io.BytesIO()
            variant.save(buf, {"tif": "TIFF", "jpg": "JPEG"}.get(suffix, suffix.upper()))
            out[f"photo{i}.{suffix}"] = buf.getvalue()
        deep = np.asarray(img.convert("L"), dtype=np.uint16) * 257  # a 16-bit scan
        for name, variant in (("deep", Image.fromarray(deep)), ("clear", img.convert("LA"))):
            buf = io.BytesIO()
            variant.save(buf, "PNG")
            out[f"photo{i}_{name}.png"] = buf.getvalue()
    return out


def _png_size(data: bytes, width: int, height: int) -> bytes:
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return data
    chunk = b"IHDR" + struct.pack(">II", width, height) + data[24:29]
    return data[:12] + chunk + struct.pack(">I", zlib.crc32(chunk)) + data[33:]


def _jpeg_size(data: bytes, width: int, height: int) -> bytes:
    for marker in (b"\xff\xc0", b"\xff\xc2"):
        at = data.find(marker)
        if at > 0:
            return data[: at + 5] + struct.pack(">HH", height, width) + data[at + 9 :]
    return data


def mutate_photo(name: str, data: bytes, rng: random.Random) -> tuple[str, str, bytes]:
    """A damaged, misnamed or bomb-sized variant of a photo.

    Args:
        name: The photo's file name (its suffix says its format).
        data: Its bytes.
        rng: The random source.

    Returns:
        ``(what was done, the new file name, the new bytes)``.
    """
    how = rng.choice(["truncate", "truncate", "flip", "huge", "huge", "suffix", "junk"])
    if how == "truncate":
        return how, name, data[: rng.randrange(len(data))]
    if how == "flip":
        out = bytearray(data)
        for _ in range(rng.choice([1, 3, 20])):
            out[rng.randrange(len(out))] = rng.randrange(256)
        return how, name, bytes(out)
    if how == "huge":
        side = rng.choice([10_000, 12_000, 30_000, 65_500])
        out = _jpeg_size(_png_size(data, side, side), side, side)
        if name.endswith(".gif"):
            out = data[:6] + struct.pack("<HH", side, side) + data[10:]
        if name.endswith(".bmp"):
            out = data[:18] + struct.pack("<ii", side, rng.choice([side, -side])) + data[26:]
        return f"declares {side}x{side}", name, out
    if how == "suffix":
        suffix = rng.choice([".jpg", ".png", ".heic", ".webp", ".txt", ".tflite", ""])
        return f"named {suffix or 'without suffix'}", Path(name).stem + suffix, data
    junk = rng.choice([b"", b"hello", rng.randbytes(2000), (EDGENN_MODELS[0]).read_bytes()])
    return "junk", name, junk


# --- Cases, runs, verdicts ---------------------------------------------------------------------


def make_cases(folder: Path, models: int, photos: int, seed: int = 0) -> list[Case]:
    """Write ``models`` mutated models and ``photos`` mutated photos, and the runs over them.

    Each model goes through ``inspect`` (text, JSON or a target check in turn) and ``predict``
    on a real photo; every fourth also through ``tag --dry-run``. Then the paths that are not
    regular files (:func:`special_models`) go through ``inspect`` and ``predict``. Each photo goes
    through ``predict`` and ``tag`` with the tiny int8 model.

    Args:
        folder: Where to write the inputs.
        models: How many models.
        photos: How many photos.
        seed: The random seed.

    Returns:
        The cases.
    """
    rng = random.Random(seed)
    sources = [(p, p.read_bytes()) for p in base_models(folder / "base")]
    photo = next(SAMPLES.glob("Bag/*.jpg"))
    cases: list[Case] = []
    for i in range(models):
        source, raw = sources[0 if i % 3 == 0 else rng.randrange(len(sources))]
        what, data = mutate_model(raw, rng)
        path = folder / "models" / f"m{i:05d}.tflite"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        mutation = f"{source.name}: {what}"
        inspect = [["--json"], [], ["--target", rng.choice(["cpu", "micro", "edgetpu", "gpu"])]]
        cases.append(Case(len(cases), "model", mutation, ["inspect", str(path), *inspect[i % 3]]))
        cases.append(Case(len(cases), "model", mutation, ["predict", "-m", str(path), str(photo)]))
        if i % 4 == 0:
            args = ["tag", "-m", str(path), str(photo), "--dry-run"]
            cases.append(Case(len(cases), "model", mutation, args))
    for special in special_models(folder / "special"):
        for args in (["inspect", str(special)], ["predict", "-m", str(special), str(photo)]):
            cases.append(Case(len(cases), "model", f"special: {special.name}", args))
    originals = base_photos()
    model = str(EDGENN_MODELS[[p.name for p in EDGENN_MODELS].index("tiny_cnn_int8.tflite")])
    for i in range(photos):
        name = rng.choice(sorted(originals))
        what, new_name, data = mutate_photo(name, originals[name], rng)
        path = folder / "photos" / f"p{i:05d}" / new_name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        mutation = f"{name}: {what}"
        cases.append(Case(len(cases), "photo", mutation, ["predict", "-m", model, str(path)]))
        cases.append(Case(len(cases), "photo", mutation, ["tag", "-m", model, str(path)]))
    return cases


def _limits(memory: int) -> Callable[[], None]:
    def apply() -> None:
        import resource

        os.setsid()
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    return apply


def judge(case: Case, code: int | None, stderr: str) -> str:
    """The verdict of one finished run (see the module docstring)."""
    if code is None or code < 0 or "Traceback (most recent call last)" in stderr:
        return "crash"
    lines = [
        line
        for line in stderr.splitlines()
        if line.strip() and not (case.args[0] == "tag" and line.startswith("tag ["))
    ]
    if code == 0:
        return "ok" if not lines else "noisy"
    if code == 1 and not lines and case.args[0] == "inspect" and "--target" in case.args:
        return "failed"  # the check's table on stdout says why the model cannot run there
    # tag reports each photo it could not read as one warning line, and exits 1.
    one_line = all(line.startswith(("edgenn: error: ", "edgenn: warning: ")) for line in lines)
    return "failed" if code == 1 and one_line and 1 <= len(lines) <= case.inputs else "noisy"


class _Child:
    """One driver process: runs cases in turn, each within the time limit."""

    def __init__(self, memory: int) -> None:
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", DRIVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=REPO,
            env=env,
            preexec_fn=_limits(memory),
        )
        self.buffer = ""
        self.ended = False  # the child closed its answers: it died
        if self.read_line(60.0) != "ready":
            self.kill()
            raise RuntimeError("the fuzz driver did not start")

    def read_line(self, timeout: float) -> str | None:
        """The next line of the child's answers, or None after ``timeout`` or at its end."""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while "\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 1 << 16).decode("utf-8", "replace")
            if not chunk:
                self.ended = True
                return None
            self.buffer += chunk
        line, self.buffer = self.buffer.split("\n", 1)
        return line

    def run(self, case: Case, time_limit: float) -> tuple[int | None, str, str | None]:
        """``(exit code, stderr, None)``, or ``(None, "", "hang" | "crash")``."""
        try:
            self.proc.stdin.write(json.dumps({"id": case.id, "args": case.args}) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            self.kill()
            return None, "", "crash"
        started = self.read_line(time_limit)
        answer = self.read_line(time_limit) if started else None
        if answer is None:
            died = self.ended or self.proc.poll() is not None
            self.kill()
            return None, "", "crash" if died else "hang"
        doc = json.loads(answer)
        return doc["code"], doc["stderr"], None

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except BrokenPipeError:
                pass


def run_cases(
    cases: list[Case],
    time_limit: float = TIME_LIMIT_S,
    memory: int = MEMORY_LIMIT,
    progress: Callable[[int, int], None] | None = None,
) -> list[Outcome]:
    """Run every case in driver children (a new one after a crash or a hang).

    Args:
        cases: The runs.
        time_limit: Seconds one run may take.
        memory: Address-space limit of a child, bytes.
        progress: Optional ``progress(done, total)``.

    Returns:
        One outcome per case.
    """
    outcomes = []
    child = None
    for n, case in enumerate(cases):
        child = child or _Child(memory)
        start = time.monotonic()
        code, stderr, failure = child.run(case, time_limit)
        verdict = failure or judge(case, code, stderr)
        if failure:
            child = None
        outcomes.append(Outcome(case, verdict, code, stderr, round(time.monotonic() - start, 3)))
        if progress:
            progress(n + 1, len(cases))
    if child:
        child.kill()
    return outcomes


def summary(outcomes: list[Outcome]) -> dict[str, dict[str, int]]:
    """Counts of each verdict, for models and for photos."""
    counts: dict[str, dict[str, int]] = {}
    for kind in ("model", "photo"):
        seen = Counter(o.verdict for o in outcomes if o.case.kind == kind)
        counts[kind] = {v: seen.get(v, 0) for v in VERDICTS}
    return counts


def problems(outcomes: list[Outcome], limit: int = 10) -> str:
    """The first bad outcomes, readable: the command, the mutation and the tail of stderr."""
    bad = [o for o in outcomes if o.verdict in ("crash", "hang", "noisy")]
    return "\n".join(
        f"[{o.verdict}] {' '.join(o.case.args)} ({o.case.mutation}) -> exit {o.code}: "
        f"{o.stderr.strip()[-600:]}"
        for o in bad[:limit]
    )


# --- The standing guard ------------------------------------------------------------------------


def test_fuzzed_models_and_photos_fail_in_one_line(tmp_path):
    """0 crashes, 0 hangs, every failure one line: a fixed-seed sample of the benchmark's runs."""
    cases = make_cases(tmp_path, models=200, photos=80, seed=16)
    outcomes = run_cases(cases)
    counts = summary(outcomes)
    assert problems(outcomes) == "", counts
    for kind in ("model", "photo"):
        # The mutations reach both sides: some inputs still work, many are refused.
        assert counts[kind]["ok"] > 0 and counts[kind]["failed"] > 0, counts


def test_the_judge_can_fail():
    """The verdicts catch what they are there to catch."""
    case = Case(0, "model", "none", ["predict", "-m", "m.tflite", "x.jpg"])
    assert judge(case, 1, "edgenn: error: bad model.\n") == "failed"
    assert (
        judge(case, 1, "Traceback (most recent call last):\n  File ...\nValueError: x\n") == "crash"
    )
    assert judge(case, -11, "") == "crash"
    assert judge(case, 1, "edgenn: error: one\nedgenn: error: two\n") == "noisy"
    assert judge(case, 0, "x.py:1: DecompressionBombWarning: big\n  warnings.warn(\n") == "noisy"
    assert judge(case, 2, "Usage: edgenn ...\n") == "noisy"


def test_a_hang_and_a_crash_are_seen():
    """A run over its time limit is a hang; a child that dies is a crash."""
    slow = Case(0, "model", "none", ["inspect", str(MODELS / "hand_landmark_lite.tflite")])
    assert run_cases([slow], time_limit=0.001)[0].verdict == "hang"
    child = _Child(MEMORY_LIMIT)
    os.killpg(child.proc.pid, signal.SIGKILL)
    child.proc.wait()
    assert child.run(slow, 5.0) == (None, "", "crash")
