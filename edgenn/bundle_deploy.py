"""[device] ``edgenn deploy``: copy a bundle to a device over ssh, install it there, start it.

The system's ssh and rsync do the work. The destination is checked before ssh runs, so no part of
it is read as an ssh option or carries a second command, and every value that reaches the
device's shell is one :func:`shlex.quote`-d word (rsync gets the folder through
``--rsync-path "cd FOLDER && rsync"``, so no rsync version's own argument splitting sees it).

Deploy owns the folder it deploys to: rsync ``--delete`` makes it an exact copy of the bundle
(only the device's ``.venv`` and the :data:`MARKER` file stay), so files put there by hand go at
the next deploy. Deploy therefore copies only into a folder that is new, empty, or marked by an
earlier deploy, and refuses any other before anything is copied.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

from edgenn.bundle import DEFAULT_REMOTE_PATH, SERVICES, Service, unit_text
from edgenn.errors import EdgennError, UsageError
from edgenn.fileio import read_regular
from edgenn.shellquote import refuse_control, systemd_exec_path

__all__ = [
    "DEFAULT_REMOTE_PATH",
    "DEPLOY_TOOLS",
    "MARKER",
    "DeployResult",
    "Destination",
    "deploy",
    "parse_destination",
]

#: The file a deploy leaves in its folder: the next deploy may replace that folder's contents.
MARKER = ".edgenn-deploy"
MARKER_TEXT = (
    "This folder is managed by edgenn deploy: each deploy makes it an exact copy of a bundle "
    "(rsync --delete), so files added here are removed by the next deploy."
)
#: The Debian package each tool deploy runs comes from.
DEPLOY_TOOLS = {"ssh": "openssh-client", "rsync": "rsync"}
DESTINATION_FORM = "USER@HOST[:PATH]"
#: What deploy --run does with a bundle's unit on the device, each under ``sudo -n``.
SERVICE_COMMANDS = (
    "cp edgenn.service /etc/systemd/system/edgenn.service",
    "systemctl daemon-reload",
    "systemctl enable edgenn",
    "systemctl restart edgenn",
)

_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_HOST = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_IPV6 = re.compile(r"[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*(%[A-Za-z0-9_.-]+)?")
#: Exit codes of the preparation script on the device.
_NOT_A_FOLDER, _NOT_OURS = 3, 5
#: Characters a folder on the device must not hold: venv's activate and pip's launchers write the
#: folder into shell scripts inside double quotes, where these would run as shell code.
UNSAFE_FOLDER_CHARS = ("$", "`", '"', "\\")


@dataclasses.dataclass(frozen=True)
class Destination:
    """A checked ``USER@HOST[:PATH]``.

    Attributes:
        user: The user name.
        host: Host name or address (an IPv6 address without its brackets).
        path: The folder, relative to the user's home folder unless absolute.
    """

    user: str
    host: str
    path: str

    @property
    def ssh_host(self) -> str:
        """``user@host`` as ssh takes it."""
        return f"{self.user}@{self.host}"

    @property
    def rsync_host(self) -> str:
        """``user@host`` as rsync takes it (an IPv6 address in brackets)."""
        return f"{self.user}@[{self.host}]" if ":" in self.host else self.ssh_host

    def __str__(self) -> str:
        return f"{self.rsync_host}:{self.path}"


def _bad(text: str, why: str, hint: str | None = None) -> UsageError:
    return UsageError(
        f"Destination {text!r} {why}; expected {DESTINATION_FORM}, e.g. "
        "pi@raspberrypi.local:apps/camera.",
        hint,
    )


def parse_destination(text: str) -> Destination:
    """Check and split ``USER@HOST[:PATH]`` (``USER@[IPV6]:PATH`` for an IPv6 address).

    An empty PATH is :data:`DEFAULT_REMOTE_PATH`; ``~/x`` is ``x`` (relative paths start in the
    home folder). Refused: anything that begins with ``-`` (ssh would read it as an option),
    control characters, characters no user or host name has, ``~other`` (not expanded), and a
    PATH with :data:`UNSAFE_FOLDER_CHARS`.

    Args:
        text: The destination argument.

    Returns:
        The destination.

    Raises:
        UsageError: It is not of that form.
    """
    refuse_control(text, "the destination", DESTINATION_FORM, UsageError)
    user, at, rest = text.partition("@")
    if user.startswith("-") or rest.startswith("-"):
        raise _bad(text, "begins with '-', which ssh would read as an option")
    if not at:
        raise _bad(text, "names no user")
    if rest.startswith("["):
        host, closed, tail = rest[1:].partition("]")
        if not closed or not _IPV6.fullmatch(host) or tail[:1] not in ("", ":"):
            raise _bad(text, "has no IPv6 address in [brackets] before the ':'")
        path = tail[1:]
    else:
        host, _, path = rest.partition(":")
        if path.startswith(":") or _IPV6.fullmatch(rest):
            address = rest if _IPV6.fullmatch(rest) else rest.rpartition(":")[0]
            raise _bad(
                text, "holds an IPv6 address without brackets", f"Write {user}@[{address}]:PATH."
            )
    if not _USER.fullmatch(user) or not (_HOST.fullmatch(host) or ":" in host):
        raise _bad(text, "is not a user name and a host name")
    return Destination(user, host, _folder(text, path))


def _folder(text: str, path: str) -> str:
    """The PATH part (``~``, ``~/x`` start at home; ``~other``, ``-x``, ``$`` refused)."""
    if path == "~" or path.startswith("~/"):
        path = path[2:] or "."
    elif path.startswith("~"):
        raise _bad(
            text,
            "has a PATH in another user's home (~user), which deploy does not expand",
            "Give the folder as an absolute path.",
        )
    if path.startswith("-"):
        raise _bad(
            text,
            "has a PATH that begins with '-', which a program would read as an option",
            f"Write ./{path}.",
        )
    if any(c in path for c in UNSAFE_FOLDER_CHARS):
        raise _bad(
            text,
            "has a PATH with $, `, \" or \\, which the device's venv and pip write into shell "
            "scripts inside double quotes (they would run it as code)",
            "Choose a folder name without them.",
        )
    return path or DEFAULT_REMOTE_PATH


@dataclasses.dataclass
class DeployResult:
    """What :func:`deploy` did (``edgenn deploy --json`` prints it)."""

    destination: str
    copied: bool
    installed: bool
    started: bool
    output: str


def deploy(
    bundle: Path, destination: str, run: bool = False, ssh_options: list[str] | None = None
) -> DeployResult:
    """Copy a bundle to ``USER@HOST[:PATH]`` with rsync over ssh and run ``install.sh`` there.

    The folder must be new, empty, or one an earlier deploy marked with :data:`MARKER`: its
    contents are replaced (rsync ``--delete``; the device's ``.venv`` stays).

    Args:
        bundle: The bundle folder.
        destination: ``user@host`` or ``user@host:path`` (default path :data:`DEFAULT_REMOTE_PATH`).
        run: Also install and (re)start the bundle's systemd unit, written for the folder and
            user deployed to, or check that ``edgenn --version`` runs there when it has none.
        ssh_options: Extra ssh arguments (e.g. ``-p 2222``).

    Returns:
        The result.

    Raises:
        UsageError: The destination is not ``USER@HOST[:PATH]``, or an ssh option holds a control
            character.
        EdgennError: Not a bundle; ssh or rsync missing or failed (one line: unreachable,
            refused, ...); the folder is not one deploy may replace.
    """
    dest = parse_destination(destination)
    options = [
        refuse_control(o, "the ssh option", "one ssh argument", UsageError)
        for o in ssh_options or []
    ]
    bundle = Path(bundle)
    if not (bundle / "install.sh").is_file():
        raise EdgennError(
            f"{bundle} is not an edgenn bundle (no install.sh).", "Make one with: edgenn bundle"
        )
    service = _bundle_service(bundle) if run else None
    if service is not None:
        # A folder systemd cannot run a program from is refused before anything is copied.
        systemd_exec_path(f"/{dest.path}/run.sh")
    for tool, package in DEPLOY_TOOLS.items():
        if shutil.which(tool) is None:
            raise EdgennError(
                f"{tool} is not installed.", f"Install it: sudo apt-get install {package}"
            )
    ssh = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", *options]
    _prepare(ssh, dest)
    folder = shlex.quote(dest.path)
    rsync = ["rsync", "-a", "--delete", "--exclude", "/.venv", "--exclude", f"/{MARKER}"]
    rsync += ["-e", shlex.join(ssh), "--rsync-path", f"cd {folder} && rsync"]
    # An absolute source: a local folder named "a:b" or "-x" is never a host or an option.
    _run([*rsync, f"{bundle.resolve()}/", f"{dest.rsync_host}:./"], "copying the bundle")
    out = _run([*ssh, "--", dest.ssh_host, f"cd {folder} && ./install.sh"], "running install.sh")
    if run:
        out += _start(service, ssh, dest)
    return DeployResult(destination, True, True, run, out)


def _prepare(ssh: list[str], dest: Destination) -> None:
    """Make the folder, or refuse one that holds files an earlier deploy did not put there."""
    marker = shlex.quote(MARKER)
    script = f"""d={shlex.quote(dest.path)}
if [ -e "$d" ] && [ ! -d "$d" ]; then exit {_NOT_A_FOLDER}; fi
mkdir -p "$d" && cd "$d" || exit 1
if [ ! -f {marker} ] || [ -L {marker} ]; then
  if [ -n "$(ls -A)" ]; then exit {_NOT_OURS}; fi
  printf '%s\\n' {shlex.quote(MARKER_TEXT)} > {marker}
fi"""
    # Quoted twice: once for the user's shell, once for the device's.
    mark = shlex.quote("touch " + shlex.quote(f"{dest.path}/{MARKER}"))
    known = {
        _NOT_A_FOLDER: EdgennError(
            f"Deploy refused: {dest} exists and is not a folder.",
            f"Name a folder of its own, e.g. {dest.rsync_host}:{DEFAULT_REMOTE_PATH}",
        ),
        _NOT_OURS: EdgennError(
            f"Deploy refused: {dest} is not empty and has no {MARKER} file from an earlier "
            "deploy, and a deploy replaces a folder's contents (rsync --delete).",
            f"Deploy into a new or empty folder, e.g. {dest.rsync_host}:{DEFAULT_REMOTE_PATH}; "
            f"if it holds only an earlier edgenn deploy, mark it: ssh {dest.ssh_host} {mark}",
        ),
    }
    _run([*ssh, "--", dest.ssh_host, script], "preparing the destination folder", known=known)


def _start(service: Service | None, ssh: list[str], dest: Destination) -> str:
    """Install and (re)start the bundle's unit, or check that edgenn runs when it has none."""
    folder = shlex.quote(dest.path)
    if service is None:
        command = f"cd {folder} && .venv/bin/edgenn --version"
        return _run([*ssh, "--", dest.ssh_host, command], "running edgenn")
    # The unit names the real folder and user: ask the device, NUL-separated like any path.
    where = _run(
        [*ssh, "--", dest.ssh_host, f'cd {folder} && printf \'%s\\0\' "$(pwd -P)" "$(id -un)"'],
        "finding the deployed folder",
    ).split("\0")
    if len(where) != 3:
        raise EdgennError(f"Cannot write a unit for {dest}: the device answered {where!r}.")
    unit = unit_text(service, f"{where[0].rstrip('/')}/run.sh", where[1])
    steps = " && ".join(f"sudo -n {c}" for c in SERVICE_COMMANDS)
    command = f"cd {folder} && cat > edgenn.service && {steps}"
    return _run([*ssh, "--", dest.ssh_host, command], "starting the service", stdin=unit)


def _bundle_service(bundle: Path) -> Service | None:
    """The service a bundle runs (from its bundle.json), or None."""
    if not (bundle / "edgenn.service").is_file():
        return None
    try:
        doc = json.loads(read_regular(bundle / "bundle.json", "the bundle's bundle.json", 1 << 20))
        return SERVICES[doc["service"]]
    except (ValueError, TypeError, KeyError):
        raise EdgennError(
            f"{bundle}/bundle.json names no service of {', '.join(SERVICES)}.",
            "Make the bundle again with: edgenn bundle MODEL -o DIR --service NAME",
        ) from None


#: ssh's stderr phrases that mean the host could not be reached, and those that mean it said no.
_UNREACHABLE = ("Could not resolve hostname", "No route to host", "Connection refused", "timed out")
_REFUSED = ("Permission denied",)


def _run(
    cmd: list[str],
    what: str,
    stdin: str | None = None,
    known: Mapping[int, EdgennError] | None = None,
) -> str:
    """Run ssh or rsync; a failure is one line (``known`` maps the device's exit codes)."""
    proc = subprocess.run(
        cmd, capture_output=True, text=True, input=stdin, encoding="utf-8", errors="replace"
    )
    if proc.returncode != 0:
        if known and proc.returncode in known:
            raise known[proc.returncode]
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        reason = lines[-1] if lines else f"exit code {proc.returncode}"
        if any(phrase in proc.stderr for phrase in _UNREACHABLE):
            reason = "host unreachable: " + reason
        elif any(phrase in proc.stderr for phrase in _REFUSED):
            reason = "authentication refused: " + reason
        raise EdgennError(f"Deploy failed while {what}: {reason}")
    return proc.stdout
