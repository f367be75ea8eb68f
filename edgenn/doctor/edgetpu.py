"""[device] The Edge TPU: its runtime library and version, the devices, and what a model needs.

The runtime is ``libedgetpu.so.1`` (Debian packages ``libedgetpu1-std``/``-max`` from Coral's
apt repository); its C API's ``edgetpu_version()`` answers ``..., RuntimeVersion(14)``. A model
compiled by ``edgetpu_compiler`` holds ``edgetpu-custom-op`` ops whose custom options are a
FlexBuffer map: key ``"4"`` is the serialized executable package, a ``DWN1`` flatbuffer whose
first field is the minimum runtime version and fifth the compiler version (libedgetpu's
``tflite/custom_op_data.cc`` and ``executable/executable.fbs``). A runtime older than that
refuses the model ("Package requires runtime version (N), which is newer than this runtime
version (M)").
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import re
import shutil
import subprocess
from pathlib import Path

from edgenn.doctor import FAIL, OK, WARN, Check
from edgenn.runtime import EDGETPU_INSTALL, EDGETPU_LIBRARY
from edgenn.tflite_model import TFLiteFile

#: The custom op that holds the compiled part of a model.
EDGETPU_CUSTOM_OP = "edgetpu-custom-op"
#: The executable package's file identifier.
PACKAGE_IDENTIFIER = b"DWN1"
#: The Debian packages of the runtime (standard and maximum clock).
DEBIAN_PACKAGES = ("libedgetpu1-std", "libedgetpu1-max")
#: USB ids of the Coral USB Accelerator: before its firmware is loaded, and after.
USB_IDS = {("1a6e", "089a"): "Coral USB Accelerator", ("18d1", "9302"): "Coral USB Accelerator"}
USB_DEVICES = Path("/sys/bus/usb/devices")
#: PCIe and M.2 Edge TPUs appear as /dev/apex_N (the gasket-dkms driver).
PCIE_GLOB = "apex_*"
#: Coral's apt repository and the runtime (one owner: :mod:`edgenn.runtime`).
INSTALL = EDGETPU_INSTALL
NEEDS_DEVICE = (
    "a Coral Edge TPU: the USB Accelerator (lsusb shows 1a6e:089a or 18d1:9302) or a PCIe/M.2 "
    "module (/dev/apex_0, driver: sudo apt-get install gasket-dkms)"
)


@dataclasses.dataclass
class EdgeTpuRuntime:
    """What is installed for the Edge TPU here.

    Attributes:
        library: Where the dynamic linker finds the runtime ('' when it does not).
        loaded: ``libedgetpu.so.1`` loaded.
        error: Why it did not load.
        version: ``edgetpu_version()``'s text.
        runtime_version: The runtime version number in it.
        packages: Installed Debian packages and their versions.
        devices: The Edge TPUs found (USB ids, /dev/apex_N).
    """

    library: str = ""
    loaded: bool = False
    error: str = ""
    version: str = ""
    runtime_version: int | None = None
    packages: dict[str, str] = dataclasses.field(default_factory=dict)
    devices: list[str] = dataclasses.field(default_factory=list)


def detect() -> EdgeTpuRuntime:
    """Look for the runtime library, its Debian package and Edge TPU devices.

    Returns:
        What was found.
    """
    found = EdgeTpuRuntime(library=ctypes.util.find_library("edgetpu") or "")
    try:
        lib = ctypes.CDLL(EDGETPU_LIBRARY)
    except OSError as exc:
        found.error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    else:
        found.loaded = True
        version = getattr(lib, "edgetpu_version", None)
        if version is not None:
            version.restype = ctypes.c_char_p
            found.version = (version() or b"").decode("utf-8", "replace")
            match = re.search(r"RuntimeVersion\((\d+)\)", found.version)
            found.runtime_version = int(match[1]) if match else None
    found.packages = debian_packages(DEBIAN_PACKAGES)
    found.devices = devices()
    return found


def debian_packages(names: tuple[str, ...]) -> dict[str, str]:
    """Installed versions of Debian packages (empty where dpkg is absent).

    Args:
        names: Package names.

    Returns:
        ``{name: version}`` of the installed ones.
    """
    dpkg = shutil.which("dpkg-query")
    if dpkg is None:
        return {}
    fmt = "${Package} ${Version} ${db:Status-Status}\\n"
    try:
        out = subprocess.run(
            [dpkg, "-W", f"-f={fmt}", *names], capture_output=True, text=True, timeout=20
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    found = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] == "installed":
            found[parts[0]] = parts[1]
    return found


def devices() -> list[str]:
    """Coral USB Accelerators (by USB id) and PCIe/M.2 Edge TPUs (/dev/apex_N) on this machine."""
    found = []
    for device in sorted(USB_DEVICES.glob("*")) if USB_DEVICES.is_dir() else []:
        try:
            ids = (
                (device / "idVendor").read_text().strip(),
                (device / "idProduct").read_text().strip(),
            )
        except OSError:
            continue
        if ids in USB_IDS:
            found.append(f"{USB_IDS[ids]} (USB {ids[0]}:{ids[1]})")
    found += [str(p) for p in sorted(Path("/dev").glob(PCIE_GLOB))]
    return found


def check_runtime(tpu: EdgeTpuRuntime) -> Check:
    """The Edge TPU runtime and devices (a warning when absent: only Coral users need them).

    Args:
        tpu: What :func:`detect` found.

    Returns:
        The check: a failure when an Edge TPU is plugged in but the runtime is missing.
    """
    packages = ", ".join(f"{k} {v}" for k, v in tpu.packages.items()) or "no Debian package"
    devices = ", ".join(tpu.devices) or "no Edge TPU device"
    details = dataclasses.asdict(tpu)
    if not tpu.loaded:
        found = f"{EDGETPU_LIBRARY} not found ({tpu.error}); {packages}; {devices}"
        status = FAIL if tpu.devices else WARN
        needed = "the Edge TPU runtime, to run Edge TPU-compiled models"
        return Check("edgetpu-runtime", status, found, needed, INSTALL, details=details)
    found = f"{EDGETPU_LIBRARY} loads: runtime version {tpu.runtime_version}; {packages}; {devices}"
    if not tpu.devices:
        return Check("edgetpu-runtime", WARN, found, NEEDS_DEVICE, details=details)
    return Check("edgetpu-runtime", OK, found, details=details)


@dataclasses.dataclass
class CompiledModel:
    """What a model compiled for the Edge TPU needs.

    Attributes:
        ops: How many ``edgetpu-custom-op`` ops it holds.
        min_runtime_version: The newest runtime version any of them requires (None: unreadable).
        compiler_versions: The compiler versions that made them.
        errors: Why a package could not be read.
    """

    ops: int
    min_runtime_version: int | None
    compiler_versions: list[str]
    errors: list[str]


def read_package(options: bytes | None) -> tuple[int, str]:
    """The minimum runtime version and compiler version in an ``edgetpu-custom-op``'s options.

    Args:
        options: The op's custom options.

    Returns:
        ``(min_runtime_version, compiler_version)``.

    Raises:
        ValueError: The options do not hold an executable package.
    """
    from flatbuffers import encode, flexbuffers, number_types, packer, table

    if not options:
        raise ValueError("the op has no custom options")
    try:
        executable = flexbuffers.GetRoot(bytearray(options)).AsMap["4"]
        package = bytes(executable.AsStringBytes if executable.IsString else executable.AsBlob)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ValueError(f"no executable package in its options ({exc})") from None
    if package[4:8] != PACKAGE_IDENTIFIER:
        raise ValueError(f"the package identifier is {package[4:8]!r}, not {PACKAGE_IDENTIFIER!r}")
    buf = bytearray(package)
    root = table.Table(buf, encode.Get(packer.uoffset, buf, 0))
    # vtable slots: field n sits at 4 + 2n (min_runtime_version n=0, compiler_version n=4).
    slot = root.Offset(4)
    minimum = root.Get(number_types.Int32Flags, slot + root.Pos) if slot else 0
    slot = root.Offset(12)
    compiler = root.String(slot + root.Pos).decode("utf-8", "replace") if slot else ""
    return int(minimum), compiler


def compiled_model(model: TFLiteFile) -> CompiledModel | None:
    """What an Edge TPU-compiled model needs (None for a model that is not compiled).

    Args:
        model: The parsed model.

    Returns:
        The requirements.
    """
    from edgenn.targets.gpu import custom_options

    ops = [op for op in model.ops if op.custom and op.name == EDGETPU_CUSTOM_OP]
    if not ops:
        return None
    options = custom_options(model)
    needs, compilers, errors = [], set(), []
    for op in ops:
        try:
            minimum, compiler = read_package(options.get((op.subgraph, op.index)))
        except ValueError as exc:
            errors.append(f"op #{op.index}: {exc}")
            continue
        needs.append(minimum)
        compilers.add(compiler or "unknown")
    return CompiledModel(len(ops), max(needs) if needs else None, sorted(compilers), errors)


def check_model(model: TFLiteFile, tpu: EdgeTpuRuntime) -> Check | None:
    """Whether this Edge TPU runtime can run this compiled model (None for an uncompiled one).

    Args:
        model: The parsed model.
        tpu: What :func:`detect` found.

    Returns:
        The check.
    """
    info = compiled_model(model)
    if info is None:
        return None
    need = info.min_runtime_version
    found = (
        f"compiled for the Edge TPU ({info.ops} {EDGETPU_CUSTOM_OP}, compiler "
        f"{', '.join(info.compiler_versions) or 'unknown'}): needs runtime version {need or '?'}"
        + (f"; unreadable: {'; '.join(info.errors)}" if info.errors else "")
    )
    details = dataclasses.asdict(info)
    if not tpu.loaded:
        needed = (
            f"the Edge TPU runtime, version {need} or newer" if need else "the Edge TPU runtime"
        )
        return Check("edgetpu-model", FAIL, found, needed, INSTALL, details=details)
    have = tpu.runtime_version
    if need and have is not None and have < need:
        package = next(iter(tpu.packages), DEBIAN_PACKAGES[0])
        return Check(
            "edgetpu-model",
            FAIL,
            found + f"; this runtime is version {have}",
            f"Edge TPU runtime version {need} or newer",
            f"sudo apt-get update && sudo apt-get install --only-upgrade {package}",
            [f"on the host, compile for this runtime: edgetpu_compiler -m {have} MODEL.tflite"],
            details,
        )
    if not tpu.devices:
        return Check("edgetpu-model", FAIL, found, NEEDS_DEVICE, details=details)
    return Check(
        "edgetpu-model",
        OK,
        found + f"; runtime version {have} and {tpu.devices[0]}",
        details=details,
    )
