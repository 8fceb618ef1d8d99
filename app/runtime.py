"""``rechargectl serve``: one uvloop event loop running the DD server and the HTTP side-app.

Start-up: resolve the database (embedded PostgreSQL when none is configured), migrate,
optionally seed the demo data, then listen. ``--workers N`` forks N such processes that
share the ports through SO_REUSEPORT, with Prometheus multiprocess metrics in
``<data_dir>/metrics`` (wiped at start). SIGTERM or SIGINT drains: stop accepting, let
flows in progress finish within ``shutdown_grace_s``, close the pool, exit 0.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import resource
import shutil
import signal
import sys

from app.logs import configure_logging
from recharge.config import Settings

log = logging.getLogger("recharge")


def _prepare_metrics_dir(settings: Settings) -> None:
    """Multiprocess metrics need their directory before prometheus_client is imported."""
    if settings.workers <= 1 and settings.prometheus_multiproc_dir is None:
        return
    path = settings.prometheus_multiproc_dir or settings.data_dir / "metrics"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path.resolve())


async def prepare_database(dsn: str, settings: Settings, *, demo: bool) -> None:
    """Migrate, and seed the demo data when asked (both idempotent)."""
    import asyncpg

    from recharge import db
    from recharge.keys import load_keys

    conn = await asyncpg.connect(dsn)
    try:
        await db.migrate(conn)
        if demo:
            from app import demo as demo_data

            keys = load_keys(settings.resolved_key_file, create_demo=True)
            await demo_data.seed(conn, keys, settings.data_dir)
    finally:
        await conn.close()


class RunningPlatform:
    """Pool, DD server, HTTP side-app and sweeper of one worker, started and drained together."""

    def __init__(self, settings: Settings, dsn: str) -> None:
        self.settings = settings
        self.dsn = dsn
        self.dd_port = 0
        self.http_port = 0

    async def start(self) -> None:
        from app import rooms
        from http_api.app import HttpService
        from http_api.mpay_env import env_of_platform
        from recharge import db
        from recharge.context import Platform
        from recharge.keys import load_keys
        from recharge.loads.lanes import LoadLanes
        from recharge.mpay import dispatcher
        from recharge.observability import run_monitors
        from recharge.sweeper import run_sweeper
        from server.service import DDService

        rooms.connect()  # the wallet's hooks in the mobile payment room (2011, 销号, bank recharges into the wallet)
        settings = self.settings
        pool = await db.create_pool(self.dsn, settings)
        self.ctx = Platform(settings=settings, pool=pool, keys=load_keys(settings.resolved_key_file), dsn=self.dsn)
        _warn_if_descriptors_bind(settings, self.ctx.connections.limit)
        lanes = LoadLanes.create(self.ctx)  # one load engine's lanes: DD recharges and wallet loads share them
        self.http = HttpService(self.ctx, lanes)
        self.dd = DDService(self.ctx, lanes)
        self.http_port = await self.http.start()
        self.dd_port = await self.dd.start()
        self.ctx.background.add(
            asyncio.create_task(run_sweeper(pool, settings), name="sweeper")
        )
        self.ctx.background.add(asyncio.create_task(run_monitors(pool, settings), name="monitors"))
        self.ctx.background.add(asyncio.create_task(
            dispatcher.run(pool, lambda: env_of_platform(self.ctx)), name="mpay-outbox"))
        self.ctx.ready = True
        log.info("listening: DD on port %d, HTTP on port %d", self.dd_port, self.http_port)
        if settings.console_enabled:
            host = "127.0.0.1" if settings.http_host in ("0.0.0.0", "::", "") else settings.http_host
            log.info("operator console: http://%s:%d/console/", host, self.http_port)

    async def stop(self) -> None:
        """Drain: stop accepting, let flows in progress finish within the grace period, close."""
        self.ctx.ready = False  # /readyz answers 503: a load balancer stops sending new connections
        if self.settings.drain_delay_s > 0:
            log.info("not ready; still serving for %.1fs while load balancers notice", self.settings.drain_delay_s)
            await asyncio.sleep(self.settings.drain_delay_s)
        log.info("draining (grace %.1fs)", self.settings.shutdown_grace_s)
        self.ctx.draining = True
        await asyncio.gather(self.dd.stop(self.settings.shutdown_grace_s), self.http.stop())
        for task in self.ctx.background:
            task.cancel()
        await asyncio.gather(*self.ctx.background, return_exceptions=True)
        await self.ctx.pool.close()
        log.info("stopped")


def settle_heap() -> None:
    """After start-up: collect once, then move every object alive into the permanent generation
    (``gc.freeze``). Modules, pools, caches and metrics live as long as the process; without this
    every full collection walks them all again — measured at 160 ms in a DD worker on the shared
    2-core machine, one pause that every step in flight waits out (bench/notes.md, issue 20's
    ``dd_stage_p99_ms``). Frozen objects are never collected: call it once, when start-up is done."""
    gc.collect()
    gc.freeze()


async def worker_main(settings: Settings, dsn: str) -> None:
    """One worker process: start everything, wait for SIGTERM/SIGINT, drain."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    running = RunningPlatform(settings, dsn)
    await running.start()
    settle_heap()
    # One write of the whole line: workers share stdout, and print's separate newline could interleave.
    sys.stdout.write(f"READY dd_port={running.dd_port} http_port={running.http_port} pid={os.getpid()}\n")
    sys.stdout.flush()
    await stop.wait()
    await running.stop()


def _run_worker(settings: Settings, dsn: str) -> None:
    import uvloop

    uvloop.run(worker_main(settings, dsn))


def wanted_descriptors(settings: Settings) -> int:
    """File descriptors a worker needs for its configured limits: both listeners' connections,
    the pool, and ``fd_reserve`` for everything else."""
    return settings.dd_max_connections + settings.http_max_connections + settings.pool_max_size + settings.fd_reserve


def raise_descriptor_limit(settings: Settings) -> None:
    """Raise ``RLIMIT_NOFILE`` as far as the limits need (systemd's default soft limit is 1024;
    ``LimitNOFILE=`` raises the hard one): the hard limit too where the process is allowed to
    (``CAP_SYS_RESOURCE``), else the soft limit up to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = wanted_descriptors(settings)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return
        except (ValueError, OSError):  # not privileged: the hard limit stays (see the warning at start)
            pass
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def _warn_if_descriptors_bind(settings: Settings, budget: int) -> None:
    wanted = settings.dd_max_connections + settings.http_max_connections
    if budget < wanted:
        log.warning(
            "file descriptors allow %d client connections, DD and HTTP together: fewer than"
            " dd_max_connections + http_max_connections = %d; raise the hard RLIMIT_NOFILE"
            " (systemd LimitNOFILE=) to at least %d", budget, wanted, wanted_descriptors(settings),
        )


def serve(settings: Settings, *, demo: bool) -> int:
    """Run the platform in the foreground until SIGTERM/SIGINT. Returns the exit status."""
    import uvloop

    configure_logging(settings.log_level)
    raise_descriptor_limit(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    _prepare_metrics_dir(settings)
    from recharge import db  # after the metrics directory: recharge.db imports prometheus_client

    dsn, embedded = db.resolve_database_url(settings)
    try:
        uvloop.run(prepare_database(dsn, settings, demo=demo))
        _announce_console(settings, demo=demo)
        if settings.workers <= 1:
            _run_worker(settings, dsn)
            return 0
        return _serve_forked(settings, dsn)
    finally:
        if embedded is not None:
            embedded.cleanup()


def _announce_console(settings: Settings, *, demo: bool) -> None:
    """(demo) Where the console's demo administrator's one-time password is: the file's path
    only, never the password. The console's address is logged when the HTTP port is known."""
    if not settings.console_enabled or not demo:
        return
    from app.demo import DEMO_ADMIN, admin_password_file

    path = admin_password_file(settings.data_dir)
    if path.exists():
        log.info("demo console administrator %r: one-time password in %s (readable only by its owner)",
                 DEMO_ADMIN, path.resolve())
    else:
        log.info("demo console administrator %r exists; its one-time password file is gone: "
                 "rechargectl operator reset-password --name %s", DEMO_ADMIN, DEMO_ADMIN)


def _die_with_parent(parent: int) -> None:
    """A worker drains and exits (SIGTERM) when its supervisor dies, even by SIGKILL: no orphan
    keeps serving the shared ports with nobody to stop it (Linux ``PR_SET_PDEATHSIG``; elsewhere
    only the parent's own SIGTERM stops the workers)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _serve_forked(settings: Settings, dsn: str) -> int:
    """N workers sharing the ports; the parent forwards SIGTERM/SIGINT and waits for them."""
    children: list[int] = []
    parent = os.getpid()
    for _ in range(settings.workers):
        pid = os.fork()
        if pid == 0:  # the child: its own loop, never returns into the parent's code
            code = 0
            try:
                _die_with_parent(parent)
                _run_worker(settings, dsn)
            except BaseException:
                log.exception("worker failed")
                code = 1
            finally:
                os._exit(code)
        children.append(pid)

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            try:
                os.kill(child, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    status = 0
    for child in children:
        _, raw = os.waitpid(child, 0)
        status = status or os.waitstatus_to_exitcode(raw)
    return status

