"""Start, find and stop the cluster's daemons: each detached, its PID in a file, its output in a log.

The daemons outlive the command that starts them (``make cluster`` returns; ``make
cluster-stop`` stops them later), so every PID is written to ``run/<name>.pid`` and every
stop reads it back. PostgreSQL refuses to run as root: Patroni (which starts it) runs as the
``pgserver`` user that the embedded-PostgreSQL package also uses.
"""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

PG_USER = "pgserver"


def ensure_pg_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(PG_USER)
    except KeyError:
        subprocess.run(["useradd", "-s", "/bin/bash", PG_USER], check=True)
        return pwd.getpwnam(PG_USER)


def chown_to_pg_user(path: Path, mode: int) -> None:
    user = ensure_pg_user()
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, user.pw_uid, user.pw_gid)
    path.chmod(mode)


def start(name: str, argv: Sequence[str], run_dir: Path, log_dir: Path, *, env: dict[str, str] | None = None,
          as_pg_user: bool = False, cwd: Path | None = None) -> int:
    """Start ``argv`` detached (its own session), remember its PID; returns the PID."""
    log_dir.mkdir(parents=True, exist_ok=True)
    command = list(argv)
    if as_pg_user:
        command = ["setpriv", f"--reuid={PG_USER}", f"--regid={PG_USER}", "--init-groups", *command]
    with open(log_dir / f"{name}.log", "ab") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True,
        )
    (run_dir / f"{name}.pid").write_text(str(process.pid))
    return process.pid


def pid_of(name: str, run_dir: Path) -> int | None:
    """The PID recorded for ``name`` if that process is still alive."""
    path = run_dir / f"{name}.pid"
    if not path.exists():
        return None
    try:
        pid = int(path.read_text().strip())
    except ValueError:
        return None
    return pid if _alive(pid) else None


def stop(name: str, run_dir: Path, *, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> bool:
    """Signal ``name`` and wait for it to go (SIGKILL after ``timeout_s``); False if it was not running."""
    pid = pid_of(name, run_dir)
    if pid is None:
        return False
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    if not wait_until(lambda: not _alive(pid), timeout_s):
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not _alive(pid), 5.0)
    (run_dir / f"{name}.pid").unlink(missing_ok=True)
    return True


def _alive(pid: int) -> bool:
    """Running (a child of ours that died is reaped here, so it does not linger as a zombie)."""
    try:
        waited, _status = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_until(ready: Callable[[], bool], timeout_s: float, interval_s: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if ready():
                return True
        except OSError:
            pass
        time.sleep(interval_s)
    return False
