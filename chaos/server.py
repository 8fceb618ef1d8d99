"""The platform under test as an operator runs it: ``rechargectl serve`` in a process group of its own.

Killing the group with SIGKILL kills the supervisor and every worker at once (a machine crash as
far as the platform can tell); the embedded PostgreSQL runs in a session of its own and survives
it, as it would survive a crash of the platform in production.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECHARGECTL = str(Path(sys.executable).parent / "rechargectl")  # the installed console script


class ServeFailed(Exception):
    """``serve`` exited, or did not print its READY lines in time; carries the end of its log."""


class Served:
    """One ``rechargectl serve`` at a time on fixed ports and one data folder; restartable."""

    def __init__(
        self,
        data_dir: Path,
        *,
        dd_port: int = 0,
        http_port: int = 0,
        workers: int = 1,
        database_url: str | None = None,
        demo: bool = True,
        env: dict[str, str] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.dd_port = dd_port
        self.http_port = http_port
        self.workers = workers
        self.database_url = database_url
        self.demo = demo
        self.env = env or {}
        self.log_path = data_dir / "serve.log"
        self.proc: subprocess.Popen[str] | None = None
        self.pids: list[int] = []
        self.starts = 0

    def command(self) -> list[str]:
        cmd = [RECHARGECTL, "serve", "--data-dir", str(self.data_dir),
               "--dd-port", str(self.dd_port), "--http-port", str(self.http_port)]
        if self.workers > 1:
            cmd += ["--workers", str(self.workers)]
        if self.database_url:
            cmd += ["--database-url", self.database_url]
        if self.demo:
            cmd.append("--demo")
        return cmd

    def start(self, timeout_s: float = 120.0) -> float:
        """Start ``serve`` and wait for a READY line from every worker; seconds it took."""
        assert self.proc is None or self.proc.poll() is not None, "serve is already running"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "RECHARGE_DD_HOST": "127.0.0.1", "RECHARGE_HTTP_HOST": "127.0.0.1", **self.env}
        if not self.database_url:
            env.pop("DATABASE_URL", None)
        started = time.monotonic()
        log = self.log_path.open("a", encoding="utf-8")
        log.write(f"--- start {self.starts + 1}: {' '.join(self.command())}\n")
        log.flush()
        self.proc = subprocess.Popen(self.command(), cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True,
                                     env=env, start_new_session=True)
        log.close()
        self.starts += 1
        ready = self._read_ready_lines(self.proc, timeout_s)
        self.pids = [int(fields["pid"]) for fields in ready]
        if self.dd_port == 0 or self.http_port == 0:
            self.dd_port, self.http_port = int(ready[0]["dd_port"]), int(ready[0]["http_port"])
        return time.monotonic() - started

    def _read_ready_lines(self, proc: subprocess.Popen[str], timeout_s: float) -> list[dict[str, str]]:
        lines: list[dict[str, str]] = []
        done = threading.Event()

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.startswith("READY "):
                    lines.append(dict(item.split("=", 1) for item in line.split()[1:]))
                    if len(lines) >= self.workers:
                        done.set()
            done.set()  # EOF: serve exited

        threading.Thread(target=read, daemon=True).start()
        if not done.wait(timeout_s) or len(lines) < self.workers:
            self.kill9()
            raise ServeFailed(f"serve did not become ready (exit {proc.poll()}); log:\n{self.log_tail()}")
        return lines

    def kill9(self) -> None:
        """SIGKILL the whole process group (supervisor and workers) and reap it."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM (drain); the exit status. SIGKILL if it does not exit in time."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill9()
        return int(self.proc.returncode)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
