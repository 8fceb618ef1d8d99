"""The embedded PostgreSQL after crashes: adopted, restarted, waited for, and stopped by the last holder.

Reproduces two defects found by killing the platform: (1) the PID of a platform killed with
SIGKILL stayed in the embedded server's handle file, so a later clean stop never stopped that
PostgreSQL (one orphan per data folder); (2) a restart while the killed database's processes were
not yet gone died with a bare traceback (connection refused, or ``pg_ctl`` failing on the shared
memory they still held). Each test runs ``rechargectl serve`` on an embedded server of its own.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from chaos.server import ROOT, Served, ServeFailed


def _postmaster_pid(pgdata: Path) -> int:
    return int((pgdata / "postmaster.pid").read_text().split()[0])


def _gone(pid: int, within_s: float = 15.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


@pytest.fixture
def served() -> Iterator[Served]:
    # Not under pytest's tmp_path: another pytest session resets /tmp/pytest-of-<user> to 0700,
    # and the embedded server runs as another user that must reach its folder.
    data = ROOT / "var" / "test-embedded" / secrets.token_hex(4)
    serve = Served(data, env={"RECHARGE_DB_START_WAIT_S": "30"})
    try:
        yield serve
    finally:
        serve.stop()
        pgdata = data / "pgdata"
        if (pgdata / "postmaster.pid").exists():  # never leave a server behind, even when a test failed
            pid = _postmaster_pid(pgdata)
            if psutil.pid_exists(pid) and "postgres" in psutil.Process(pid).name():
                os.kill(pid, signal.SIGQUIT)
                _gone(pid)
        shutil.rmtree(data, ignore_errors=True)


def test_clean_stop_after_a_sigkill_stops_the_embedded_postgres(served: Served) -> None:
    served.start()
    pgdata = served.data_dir / "pgdata"
    postmaster = _postmaster_pid(pgdata)
    served.kill9()
    assert psutil.pid_exists(postmaster), "the database survives a crash of the platform"
    served.start()
    assert _postmaster_pid(pgdata) == postmaster, "the restarted platform adopts the running database"
    assert served.stop() == 0
    assert _gone(postmaster), "the last holder's clean stop stops the embedded PostgreSQL"
    assert (pgdata / ".handle_pids.json").read_text().strip() in ("", "[]")


def _stand_in_for_a_dying_postmaster(pgdata: Path) -> list[int]:
    """The killed postmaster's pid file names a process that lives on (as a postmaster being killed
    does for a moment) while its socket refuses connections; the process is ended by the test."""
    os.kill(_postmaster_pid(pgdata), signal.SIGKILL)
    out = subprocess.run(["sh", "-c", "sleep 300 >/dev/null 2>&1 & echo $!"], capture_output=True, text=True,
                         check=True)  # the sleep is reparented to init, which reaps it once killed
    lines = (pgdata / "postmaster.pid").read_text().splitlines()
    (pgdata / "postmaster.pid").write_text("\n".join([out.stdout.strip(), *lines[1:]]) + "\n")
    return [int(out.stdout)]


def _children_holding_shared_memory(pgdata: Path) -> list[int]:
    """Kill the postmaster but freeze its children: they keep the shared memory, so ``pg_ctl
    start`` fails until they are gone (SIGKILL ends them even while stopped)."""
    postmaster = psutil.Process(_postmaster_pid(pgdata))
    children = []
    for child in postmaster.children():
        with contextlib.suppress(ProcessLookupError):  # a short-lived one may be gone already
            os.kill(child.pid, signal.SIGSTOP)
            children.append(child.pid)
    postmaster.kill()
    return children


@pytest.mark.parametrize("how", ["dying postmaster adopted", "children still hold shared memory"])
def test_restart_waits_for_a_killed_database_not_yet_gone(served: Served, how: str) -> None:
    served.start()
    pgdata = served.data_dir / "pgdata"
    served.kill9()
    lingering = (_stand_in_for_a_dying_postmaster if how == "dying postmaster adopted"
                 else _children_holding_shared_memory)(pgdata)
    released = threading.Event()

    def release_once_the_start_waits() -> None:
        """The killed database's processes go only once the new start has said it waits for them."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "is not ready" not in served.log_tail(20):
            time.sleep(0.1)
        for pid in lingering:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        released.set()

    threading.Thread(target=release_once_the_start_waits, daemon=True).start()
    served.start()
    log = served.log_tail(200)
    assert "Traceback" not in log, log
    start = log.rsplit("--- start 2", 1)[1]
    waiting = [line for line in start.splitlines() if "is not ready" in line]
    assert len(waiting) == 1 and "waiting up to 30 s (db_start_wait_s)" in waiting[0], start
    assert released.is_set(), "the start went on before the killed database's processes were gone"
    assert served.stop() == 0


def test_start_gives_up_after_db_start_wait_s_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket closes
    serve = Served(tmp_path, database_url=f"postgresql://postgres@127.0.0.1:{port}/none",
                   env={"RECHARGE_DB_START_WAIT_S": "1"})
    with pytest.raises(ServeFailed):
        serve.start(timeout_s=60)
    assert serve.proc is not None and serve.proc.returncode == 3
    log = serve.log_tail()
    assert "Traceback" not in log, log
    last = log.splitlines()[-1]
    assert last.startswith("rechargectl: the database (DATABASE_URL) did not become ready within "
                           "db_start_wait_s=1 s (ConnectionRefusedError"), last
