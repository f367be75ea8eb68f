"""[host] Optuna's storage and study for ``edgenn tune``: workers, resuming, killed trials.

The study lives in an RDB storage: SQLite in the output folder by default (``study.db``), or any
URL Optuna's RDBStorage takes (``postgresql://...``) so that workers on many machines share it.

A finished trial (COMPLETE or PRUNED) is stored when it ends, so a run killed at any moment loses
none. A trial killed mid-way stays RUNNING in the storage; it is failed and its parameters are
queued again (user attribute ``retry_of``) as soon as its worker is known to be gone:

- SQLite: one worker at a time holds the study's lock file, so every RUNNING trial found by the
  worker that takes the lock belongs to a dead process;
- a shared storage: a trial whose worker ran on this host under a process id that no longer
  exists, at start and after every trial; on other hosts, Optuna's heartbeat (a trial whose
  worker has not written for :data:`GRACE_SECONDS`).

``--trials N`` counts finished trials, so a failed one is never counted, and a retry runs once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import socket
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from edgenn import optional
from edgenn.errors import EdgennError
from edgenn.host.tuning.objectives import Objective

STUDY_DB = "study.db"
#: The study name in the output folder's own SQLite file.
DEFAULT_STUDY_NAME = "edgenn-tune"
#: Trial user attributes.
WORKER_ATTR = "worker"
RETRY_ATTR = "retry_of"
REASON_ATTR = "reason"
#: Study user attributes that a worker joining the study must agree with.
STUDY_KEYS = ("objectives", "target", "dataset")
#: A worker writes a heartbeat this often while a trial runs (shared storages only) ...
HEARTBEAT_SECONDS = 10
#: ... and another worker fails the trial when none came for this long.
GRACE_SECONDS = 40
#: How often a worker waiting for other workers' trials checks the study again.
POLL_SECONDS = 2.0
#: Seconds to wait for a database server before giving up.
CONNECT_TIMEOUT = 10
PURPOSE = "edgenn tune"


def optuna_module() -> Any:
    """Optuna, quiet: its INFO lines per trial would interleave with edgenn's progress.

    Raises:
        MissingDependencyError: Optuna is not installed.
    """
    optuna = optional.require("optuna", PURPOSE)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.ERROR)
    return optuna


def worker_id() -> str:
    """``host:pid`` of this process (the ``worker`` user attribute of its trials)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def mask_url(url: str) -> str:
    """A storage URL with its password replaced by ``***``, for messages and files."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def sqlite_url(path: Path) -> str:
    """The SQLAlchemy URL of a SQLite file."""
    return f"sqlite:///{Path(path).resolve()}"


def is_sqlite(url: str) -> bool:
    """Whether the URL names a SQLite database (one worker at a time)."""
    return url.startswith("sqlite:")


def driver_url(url: str) -> str:
    """The URL SQLAlchemy is given: ``postgresql://`` (and ``postgres://``) use psycopg2.

    SQLAlchemy 2.1 made psycopg 3 the default PostgreSQL driver; the ``tune`` extra brings
    psycopg2 (``psycopg2-binary``, wheels for every platform), so the driver is named.
    """
    scheme, sep, rest = url.partition("://")
    if sep and scheme in ("postgresql", "postgres"):
        return f"postgresql+psycopg2://{rest}"
    return url


def open_storage(url: str, on_stale: Callable[[Any, Any], None] | None = None) -> Any:
    """Connect to a study storage (creating Optuna's tables in an empty database).

    Args:
        url: SQLAlchemy URL: ``sqlite:///path``, ``postgresql://user:password@host/db``...
        on_stale: Called as ``on_stale(study, frozen_trial)`` for each trial that Optuna's
            heartbeat failed (shared storages only).

    Returns:
        An ``optuna.storages.RDBStorage``.

    Raises:
        EdgennError: The database cannot be reached or the URL is not one SQLAlchemy knows.
        MissingDependencyError: Optuna, or psycopg2 for a PostgreSQL URL, is not installed.
    """
    optuna = optuna_module()
    kwargs: dict[str, Any] = {}
    if is_sqlite(url):
        # Another connection of this process (Optuna's own) may hold the write lock briefly.
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    else:
        if driver_url(url).startswith("postgresql+psycopg2"):
            optional.require("psycopg2", f"{PURPOSE} --storage {url.split(':')[0]}://")
        kwargs["engine_kwargs"] = {
            "pool_pre_ping": True,
            "connect_args": {"connect_timeout": CONNECT_TIMEOUT} if "postgres" in url else {},
        }
        kwargs.update(
            heartbeat_interval=HEARTBEAT_SECONDS,
            grace_period=GRACE_SECONDS,
            heartbeat_stale_trial_callback=on_stale,
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the heartbeat arguments are "experimental"
        try:
            return optuna.storages.RDBStorage(driver_url(url), **kwargs)
        except Exception as exc:  # noqa: BLE001 - SQLAlchemy and the drivers raise many types
            reason = " ".join(str(exc).split("\n")[0].split())[:300]
            raise EdgennError(
                f"Cannot open the study storage {mask_url(url)} ({exc.__class__.__name__}: "
                f"{reason}).",
                "Check the URL (e.g. postgresql://USER:PASSWORD@HOST:5432/DB), that the server "
                "runs and that it accepts connections from this machine.",
            ) from None


@dataclasses.dataclass(frozen=True)
class StudySpec:
    """What a study is, so that every worker that joins it agrees.

    Attributes:
        name: The study name.
        objectives: Its objectives, in order.
        target: The ``--target`` trials convert for.
        dataset: The data set trials train on.
    """

    name: str
    objectives: tuple[Objective, ...]
    target: str
    dataset: str

    def attrs(self) -> dict[str, Any]:
        """The study user attributes that record it."""
        names = [o.name for o in self.objectives]
        return {"objectives": names, "target": self.target, "dataset": self.dataset}


def find_study(storage: Any, spec: StudySpec) -> Any | None:
    """The existing study of that name, checked against ``spec``; None when there is none.

    Raises:
        EdgennError: The study was made with other objectives, target or data set (the
            study is left as it was).
    """
    optuna = optuna_module()
    try:
        study = optuna.load_study(study_name=spec.name, storage=storage)
    except KeyError:
        return None
    check_study(study, spec)
    return study


def check_study(study: Any, spec: StudySpec) -> None:
    """Refuse to add trials to a study made for something else.

    Raises:
        EdgennError: Objectives (or their directions), target or data set differ.
    """
    have = {k: study.user_attrs.get(k) for k in STUDY_KEYS}
    want = spec.attrs()
    directions = [d.name.lower() for d in study.directions]
    if have["objectives"] is None:
        raise EdgennError(
            f"Study {spec.name!r} was not created by edgenn tune (it has no objectives recorded).",
            "Use another --study-name.",
        )
    if have["objectives"] != want["objectives"] or directions != [
        o.direction for o in spec.objectives
    ]:
        raise EdgennError(
            f"Study {spec.name!r} was created with objectives {', '.join(have['objectives'])}; "
            f"received --objective {', '.join(want['objectives'])}.",
            f"Rerun with --objective {' --objective '.join(have['objectives'])}, or use another "
            "-o folder or --study-name for a new study.",
        )
    for key in ("target", "dataset"):
        if have[key] != want[key]:
            raise EdgennError(
                f"Study {spec.name!r} was created for --{key} {have[key]}; received "
                f"--{key} {want[key]}.",
                f"Rerun with --{key} {have[key]}, or use another -o folder or --study-name.",
            )


def create_study(storage: Any, spec: StudySpec, sampler: Any) -> Any:
    """Create the study, or load it when another worker created it at the same moment.

    Returns:
        The ``optuna.Study``, checked against ``spec``.

    Raises:
        EdgennError: Another worker created it with other objectives, target or data set.
    """
    optuna = optuna_module()
    study = optuna.create_study(
        storage=storage,
        study_name=spec.name,
        directions=[o.direction for o in spec.objectives],
        sampler=sampler,
        load_if_exists=True,
    )
    if not study.user_attrs.get("objectives"):
        for key, value in spec.attrs().items():
            study.set_user_attr(key, value)
    check_study(study, spec)
    return study


def sampler(trials: int) -> Any:
    """TPE over the conditional space (multivariate, grouped by model kind).

    ``constant_liar`` keeps parallel workers from proposing the same point while trials run.
    Random start-up trials: a third of the budget, from 3 to Optuna's usual 10.

    Args:
        trials: The study's ``--trials``.

    Returns:
        An ``optuna.samplers.TPESampler``.
    """
    optuna = optuna_module()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # multivariate and group are "experimental"
        return optuna.samplers.TPESampler(
            n_startup_trials=max(3, min(10, trials // 3)),
            multivariate=True,
            group=True,
            constant_liar=True,
        )


@contextlib.contextmanager
def exclusive(lock_path: Path) -> Iterator[None]:
    """Hold a SQLite study's lock file for the block (one worker at a time).

    Raises:
        EdgennError: Another process holds it.
    """
    import fcntl  # POSIX only, as edgenn's training hosts are (Windows trains under WSL2)

    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise EdgennError(
                f"{lock_path.parent} is in use by {holder}: a SQLite study takes one worker.",
                "Wait for it to finish, or share a study between workers with --storage "
                "postgresql://... --study-name NAME.",
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(worker_id() + "\n")
        fh.flush()
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def retry(study: Any, trial: Any) -> None:
    """Queue a stopped trial's parameters again, as a new trial that records which it re-runs.

    Args:
        study: The study.
        trial: The stopped trial (live or frozen).
    """
    study.enqueue_trial(dict(trial.params), user_attrs={RETRY_ATTR: trial.number})


def fail_and_retry(study: Any, frozen: Any) -> bool:
    """Fail a RUNNING trial whose worker is gone, and queue its parameters again.

    Returns:
        False when another worker finished or failed it first (it is then not queued twice:
        the storage locks the trial's row while its state changes).
    """
    optuna = optuna_module()
    try:
        study.tell(frozen.number, state=optuna.trial.TrialState.FAIL)
    except (ValueError, RuntimeError):
        # ValueError: already finished when read; UpdateFinishedTrialError (a RuntimeError):
        # finished by another worker in between.
        return False
    retry(study, frozen)
    return True


def _gone(worker: str, host: str) -> bool:
    """Whether ``host:pid`` names a process of this host that no longer exists."""
    name, _, pid = worker.rpartition(":")
    if name != host or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, under another user
    return False


def recover(study: Any, all_running: bool, cleanup: Callable[[int], None]) -> list[int]:
    """Fail and re-queue the trials whose worker is known to be gone.

    Args:
        study: The study.
        all_running: Every RUNNING trial is dead (a SQLite study whose lock this worker holds).
        cleanup: Called with the number of each trial failed here (removes its partial files).

    Returns:
        The numbers of the trials failed and queued again.
    """
    optuna = optuna_module()
    host = socket.gethostname()
    recovered = []
    for frozen in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        worker = str(frozen.user_attrs.get(WORKER_ATTR, ""))
        if (all_running or _gone(worker, host)) and fail_and_retry(study, frozen):
            cleanup(frozen.number)
            recovered.append(frozen.number)
    return recovered


def tally(study: Any) -> dict[str, int]:
    """How many trials are in each Optuna state (``COMPLETE``, ``PRUNED``, ``RUNNING``...)."""
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return counts


def finished(counts: dict[str, int]) -> int:
    """Trials that count towards ``--trials``: COMPLETE and PRUNED."""
    return counts.get("COMPLETE", 0) + counts.get("PRUNED", 0)


def wait_for_room(
    study: Any,
    total: int,
    deadline: float | None,
    recover_dead: Callable[[], object],
    on_wait: Callable[[int], None] | None = None,
) -> bool:
    """Wait while the study's finished and running trials already make ``total``.

    Another worker's running trial may still fail or be pruned... or its worker may die, and
    then its trial must run again: so a worker waits for the others' trials rather than stop
    while the total may still fall short.

    Args:
        study: The study.
        total: ``--trials``.
        deadline: ``time.monotonic()`` at which to give up (``--timeout``), or None.
        recover_dead: Fails and re-queues dead workers' trials.
        on_wait: Called once, with the finished count, when the worker starts waiting.

    Returns:
        True when a new trial should start; False when the study has its total (or time is up).
    """
    while True:
        recover_dead()
        counts = tally(study)
        done = finished(counts)
        if done >= total or (deadline is not None and time.monotonic() >= deadline):
            return False
        if done + counts.get("RUNNING", 0) < total:
            return True
        if on_wait is not None:
            on_wait(done)
            on_wait = None
        time.sleep(POLL_SECONDS)
