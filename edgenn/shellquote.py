"""[device] Values that go into generated scripts, systemd units and remote commands.

Every such value is quoted for the language that reads it, or refused when it cannot be written
there at all:

- shell (run.sh, install.sh, a command ssh runs on a device): :func:`shlex.quote`, one word
  whatever the value holds; control characters are refused first (:func:`refuse_control`), as a
  newline in a remote command or a unit file line ends it early.
- systemd unit files (systemd.syntax(7), systemd.service(5) "Command lines", systemd.unit(5)
  "Specifiers"): :func:`systemd_exec_path` and :func:`systemd_user`.
"""

from __future__ import annotations

import re

from edgenn.errors import EdgennError

#: A word systemd reads as written: no quoting, escaping or specifier in it.
_SYSTEMD_PLAIN = re.compile(r"[A-Za-z0-9_@+=:,./-]+")
#: What systemd never accepts in an executable's path, quoted or not.
_SYSTEMD_UNSAFE = ("'", '"', "\\")
#: A user name systemd's User= takes as is (the portable POSIX set, no leading '-').
_USER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")


def refuse_control(
    value: str, what: str, expected: str, error: type[EdgennError] = EdgennError
) -> str:
    """Return ``value`` unless it holds a control character (newline, NUL, tab, escape...).

    Args:
        value: The text.
        what: What it is, for the message (``"the destination"``).
        expected: The expected form, for the message.
        error: The error to raise (:class:`~edgenn.errors.UsageError` for a command-line value).

    Returns:
        ``value``.

    Raises:
        EdgennError: It holds a control character (as ``error``).
    """
    bad = next((c for c in value if ord(c) < 0x20 or ord(c) == 0x7F), None)
    if bad is not None:
        raise error(
            f"{what[:1].upper()}{what[1:]} {value!r} contains a control character ({bad!r}); "
            f"expected {expected}.",
            "Remove line breaks and control characters from it.",
        )
    return value


def systemd_exec_path(path: str) -> str:
    """``path`` as the executable word of an ``ExecStart=`` line, or refused.

    systemd splits command lines on whitespace unless a word is quoted and expands ``%``
    specifiers everywhere (so ``%`` is doubled); ``$`` stays as is, as variables are not
    expanded in the executable's path. It refuses an executable path holding a quote, a
    backslash or a control character outright ("Executable name contains special characters",
    ``string_is_safe`` in systemd's load-fragment.c), so those are refused here, where the fix
    can still be named. A plain path is written unquoted.

    Args:
        path: Absolute path of the program.

    Returns:
        The word to write after ``ExecStart=``.

    Raises:
        EdgennError: Not absolute, or holds a character systemd refuses there.
    """
    refuse_control(path, "the service's program path", "an absolute path")
    if not path.startswith("/"):
        raise EdgennError(
            f"The service's program path {path!r} is not absolute; systemd runs only an "
            "absolute path."
        )
    if any(c in path for c in _SYSTEMD_UNSAFE):
        raise EdgennError(
            f"The service's program path {path!r} holds a quote or a backslash, which systemd "
            "refuses in the program a unit runs.",
            "Put the bundle in a folder whose path has none of ' \" \\.",
        )
    escaped = path.replace("%", "%%")
    return escaped if _SYSTEMD_PLAIN.fullmatch(path) else f'"{escaped}"'


def systemd_user(name: str) -> str:
    """``name`` for a unit's ``User=`` line, refused unless it is a plain user name.

    Args:
        name: The user name.

    Returns:
        ``name``.

    Raises:
        EdgennError: Not a plain user name (letters, digits, ``_.-``; no leading ``-``).
    """
    if not _USER_NAME.fullmatch(name):
        raise EdgennError(
            f"User {name!r} cannot be written into a systemd unit; expected a plain user name "
            "(letters, digits, _ . -, not starting with - or a digit).",
            "Deploy as a user with a plain name, e.g. pi@HOST.",
        )
    return name
