"""[device] The machine: Python, OS, CPU architecture and features, 32- or 64-bit userland.

What pip can install depends on the *userland*, not the kernel: 32-bit Raspberry Pi OS often runs
a 64-bit kernel (``uname -m`` says ``aarch64``) under a 32-bit Python, and pip then picks
``armv7l`` wheels, for which there is no ai-edge-litert. :attr:`Platform.wheel_arch` is that
userland architecture.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import struct
import sys
import sysconfig
from pathlib import Path

from edgenn.doctor import FAIL, OK, WARN, Check

#: CPU features that decide how fast (or whether) a runtime's kernels run, as /proc/cpuinfo names
#: them: x86 SIMD levels; ARM NEON (32-bit), ASIMD (64-bit), dot product and fp16 arithmetic.
CPU_FEATURES = (
    "sse4_1", "sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni",
    "neon", "vfpv4", "asimd", "asimddp", "asimdhp", "fphp", "i8mm", "sve",
)  # fmt: skip
#: Where the OS describes itself.
OS_RELEASE = Path("/etc/os-release")
CPUINFO = Path("/proc/cpuinfo")
#: The board's name on ARM single-board computers ("Raspberry Pi 4 Model B Rev 1.4").
DEVICE_TREE_MODEL = Path("/proc/device-tree/model")
#: The command that makes a virtual environment where PEP 668 forbids pip outside one.
VENV_FIX = "python3 -m venv ~/edgenn-venv && . ~/edgenn-venv/bin/activate"


@dataclasses.dataclass
class Platform:
    """The facts of this machine that decide what can be installed and run.

    Attributes:
        kernel_machine: ``uname -m`` (the kernel's architecture).
        userland_bits: 32 or 64: the width of this Python's pointers.
        wheel_arch: The architecture pip installs wheels for (``x86_64``, ``aarch64``,
            ``armv7l``, ``armv6l``...).
        python: This Python's version.
        python_executable: Its path.
        in_venv: Whether it runs in a virtual environment.
        externally_managed: PEP 668: the system refuses ``pip install`` outside a venv.
        os_name: The OS's pretty name.
        kernel: The kernel release.
        libc: The C library and its version (``glibc 2.36``).
        cpu_model: The CPU's or board's name.
        cpu_count: Logical CPUs.
        cpu_features: The :data:`CPU_FEATURES` this CPU has.
    """

    kernel_machine: str
    userland_bits: int
    wheel_arch: str
    python: tuple[int, int, int]
    python_executable: str
    in_venv: bool
    externally_managed: bool
    os_name: str
    kernel: str
    libc: str
    cpu_model: str
    cpu_count: int
    cpu_features: list[str]


def wheel_arch(machine: str, bits: int) -> str:
    """The architecture pip picks wheels for, from the kernel's and the userland's widths.

    Args:
        machine: ``uname -m``.
        bits: 32 or 64 (this Python's pointer width).

    Returns:
        ``x86_64``, ``i686``, ``aarch64``, ``armv7l``, ``armv6l`` or ``machine`` itself.
    """
    m = machine.lower()
    if m in ("aarch64", "arm64", "armv8l", "armv8b"):
        return "aarch64" if bits == 64 else "armv7l"
    if m.startswith("armv7"):
        return "armv7l"
    if m.startswith("armv6"):
        return "armv6l"
    if m in ("x86_64", "amd64"):
        return "x86_64" if bits == 64 else "i686"
    return m


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def os_release(text: str) -> dict[str, str]:
    """``/etc/os-release`` as a dict (``PRETTY_NAME``, ``VERSION_CODENAME``...)."""
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and not key.startswith("#"):
            fields[key.strip()] = value.strip().strip("\"'")
    return fields


def cpuinfo(text: str) -> tuple[str, set[str]]:
    """The CPU's name and its feature flags from ``/proc/cpuinfo``.

    x86 lists ``flags`` and ``model name``; ARM lists ``Features`` and, on some kernels,
    ``Model`` (the board) or only ``CPU part``.
    """
    names: dict[str, str] = {}
    flags: set[str] = set()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        if not sep:
            continue
        if key in ("flags", "features"):
            flags |= set(value.split())
        # x86's "model" is a number; ARM's is the board.
        elif key in ("model name", "model", "hardware") and not value.isdigit():
            names.setdefault(key, value)
    name = next((names[k] for k in ("model name", "model", "hardware") if k in names), "")
    return name, flags


def detect() -> Platform:
    """The facts of this machine.

    Returns:
        The platform.
    """
    bits = struct.calcsize("P") * 8
    machine = platform.machine() or os.uname().machine
    name, flags = cpuinfo(_read(CPUINFO))
    board = _read(DEVICE_TREE_MODEL).strip("\0\n ")
    libc_name, libc_version = platform.libc_ver()
    release = os_release(_read(OS_RELEASE))
    marker = Path(sysconfig.get_paths()["stdlib"]) / "EXTERNALLY-MANAGED"
    in_venv = sys.prefix != sys.base_prefix
    return Platform(
        kernel_machine=machine,
        userland_bits=bits,
        wheel_arch=wheel_arch(machine, bits),
        python=tuple(sys.version_info[:3]),
        python_executable=sys.executable,
        in_venv=in_venv,
        externally_managed=marker.is_file() and not in_venv,
        os_name=release.get("PRETTY_NAME") or f"{platform.system()} {platform.release()}",
        kernel=platform.release(),
        libc=f"{libc_name} {libc_version}".strip() if libc_name else "unknown",
        cpu_model=board or name or platform.processor() or "unknown",
        cpu_count=os.cpu_count() or 1,
        cpu_features=[f for f in CPU_FEATURES if f in flags],
    )


def python_version(facts: Platform) -> str:
    """``3.11.7``."""
    return ".".join(map(str, facts.python))


def check_python(facts: Platform) -> Check:
    """This Python, and whether ``pip install`` works here (PEP 668).

    A Python that no runtime has a wheel for is reported by :func:`~edgenn.doctor.runtimes.
    check_runtime`, which knows the wheels.
    """
    where = "a virtual environment" if facts.in_venv else "the system Python"
    found = f"{python_version(facts)} ({platform.python_implementation()}) in {where}: {facts.python_executable}"
    if facts.externally_managed:
        return Check(
            "python",
            WARN,
            found,
            needed="a virtual environment: this system refuses pip install outside one (PEP 668)",
            fix=VENV_FIX,
        )
    return Check("python", OK, found)


def check_os(facts: Platform) -> Check:
    """The OS, kernel and C library (manylinux wheels need a recent enough glibc)."""
    found = f"{facts.os_name}, kernel {facts.kernel}, {facts.libc}"
    return Check("os", OK, found, details={"os": facts.os_name, "kernel": facts.kernel})


def check_cpu(facts: Platform) -> Check:
    """Architecture, userland width and the SIMD features the runtimes' kernels use."""
    features = " ".join(facts.cpu_features) or "none of " + ", ".join(CPU_FEATURES[:5]) + "..."
    found = (
        f"{facts.cpu_model}: {facts.cpu_count} CPU(s), kernel {facts.kernel_machine}, "
        f"{facts.userland_bits}-bit userland ({facts.wheel_arch} wheels); features: {features}"
    )
    details = {
        "kernel_machine": facts.kernel_machine,
        "userland_bits": facts.userland_bits,
        "wheel_arch": facts.wheel_arch,
        "features": facts.cpu_features,
    }
    if facts.wheel_arch == "armv6l":
        return Check(
            "cpu",
            FAIL,
            found,
            needed="an ARMv7 or ARMv8 CPU: no LiteRT or tflite-runtime wheel exists for ARMv6 "
            "(Raspberry Pi Zero/1)",
            details=details,
        )
    # An ARMv8 CPU always has NEON (its kernel calls it asimd); only an ARMv7 kernel lists "neon".
    arm32_kernel = facts.kernel_machine.lower().startswith("armv7")
    if arm32_kernel and "neon" not in facts.cpu_features:
        return Check(
            "cpu",
            WARN,
            found,
            needed="NEON: the prebuilt 32-bit ARM runtimes are built for ARMv7 with NEON",
            details=details,
        )
    if facts.wheel_arch == "armv7l" and facts.kernel_machine.lower() in ("aarch64", "arm64"):
        return Check(
            "cpu",
            WARN,
            found,
            needed="a 64-bit userland for ai-edge-litert: this 64-bit CPU runs a 32-bit OS, so "
            "only tflite-runtime 2.14 (Python <= 3.11, numpy < 2) installs; the 64-bit "
            "Raspberry Pi OS gets pip install ai-edge-litert",
            details=details,
        )
    return Check("cpu", OK, found, details=details)
