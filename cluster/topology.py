"""Where every process of a one-machine cluster listens and keeps its files, and its rendered configs.

One ``Topology`` names the loopback ports and folders of etcd, two PostgreSQL members under
Patroni, HAProxy and N platform nodes, all below one folder (``var/cluster`` for
``make cluster``, a temporary one for ``make cluster-test``). The configuration files are
the ones in ``deploy/`` with their ``${...}`` placeholders filled in, so what runs here is
what an operator copies to real machines.
"""

from __future__ import annotations

import json
import os
import secrets
import string
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
HOST = "127.0.0.1"
MEMBERS = ("pg1", "pg2")


@dataclass(frozen=True)
class Topology:
    """Ports are ``port_base`` + a fixed offset, so two clusters with other bases never collide."""

    base_dir: Path
    port_base: int = 19000
    nodes: int = 2

    # --- front doors (HAProxy)
    @property
    def dd_port(self) -> int:
        return self.port_base

    @property
    def http_port(self) -> int:
        return self.port_base + 80

    @property
    def pg_port(self) -> int:
        return self.port_base + 432

    @property
    def stats_port(self) -> int:
        return self.port_base + 404

    # --- behind them
    def node_dd_port(self, i: int) -> int:
        return self.port_base + 1 + i

    def node_http_port(self, i: int) -> int:
        return self.port_base + 81 + i

    def member_pg_port(self, m: int) -> int:
        return self.port_base + 541 + m

    def member_rest_port(self, m: int) -> int:
        return self.port_base + 8 + m

    @property
    def etcd_client_port(self) -> int:
        return self.port_base + 379

    @property
    def etcd_peer_port(self) -> int:
        return self.port_base + 380

    # --- folders
    @property
    def run_dir(self) -> Path:
        return self.base_dir / "run"

    @property
    def log_dir(self) -> Path:
        return self.base_dir / "log"

    def member_dir(self, m: int) -> Path:
        return self.base_dir / MEMBERS[m]

    def node_dir(self, i: int) -> Path:
        return self.base_dir / f"node{i + 1}"

    @property
    def key_file(self) -> Path:
        return self.base_dir / "keys.json"

    @property
    def patroni_venv(self) -> Path:
        """Shared by every cluster on this machine (installed once, from deploy/patroni/requirements.txt)."""
        return ROOT / "var" / "patroni-venv"

    def secrets(self) -> dict[str, str]:
        """The cluster's passwords and tokens, generated once into a 0600 file (never the repository)."""
        path = self.base_dir / "secrets.json"
        if path.exists():
            loaded: dict[str, str] = json.loads(path.read_text())
            return loaded
        values = {name: secrets.token_urlsafe(18) for name in ("superuser", "replication", "admin_token", "sms_secret")}
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(values, fh)
        return values

    def database_url(self, database: str = "recharge") -> str:
        """The platform's URL: HAProxy's primary endpoint, never a member directly."""
        return f"postgresql://postgres:{self.secrets()['superuser']}@{HOST}:{self.pg_port}/{database}"

    def member_url(self, m: int, database: str = "postgres") -> str:
        return f"postgresql://postgres:{self.secrets()['superuser']}@{HOST}:{self.member_pg_port(m)}/{database}"

    # --- configuration files
    def haproxy_cfg(self) -> str:
        def servers(name: str, port_of: object, check_port_of: object, extra: str, count: int) -> str:
            return "\n".join(
                f"    server {name}{i + 1} {HOST}:{port_of(i)} check port {check_port_of(i)}{extra}"  # type: ignore[operator]
                for i in range(count)
            )

        return _render(
            DEPLOY / "haproxy" / "haproxy.cfg",
            RUN_DIR=str(self.run_dir),
            MAXCONN=str(_haproxy_maxconn()),
            BIND_ADDR=HOST,
            DD_PORT=str(self.dd_port),
            HTTP_PORT=str(self.http_port),
            PG_PORT=str(self.pg_port),
            STATS_PORT=str(self.stats_port),
            DD_SERVERS=servers("node", self.node_dd_port, self.node_http_port,
                               " send-proxy-v2", self.nodes),
            HTTP_SERVERS=servers("node", self.node_http_port, self.node_http_port, "", self.nodes),
            PG_SERVERS=servers("pg", self.member_pg_port, self.member_rest_port, "", len(MEMBERS)),
        )

    def patroni_yml(self, m: int, bin_dir: Path) -> str:
        found = self.secrets()
        return _render(
            DEPLOY / "patroni" / "patroni.yml",
            MEMBER=MEMBERS[m],
            HOST=HOST,
            REST_PORT=str(self.member_rest_port(m)),
            ETCD_HOSTS=f"{HOST}:{self.etcd_client_port}",
            CLIENT_NETWORK="127.0.0.1/32",
            PG_PORT=str(self.member_pg_port(m)),
            DATA_DIR=str(self.member_dir(m)),
            BIN_DIR=str(bin_dir),
            RUN_DIR=str(self.run_dir),
            SUPERUSER_PASSWORD=found["superuser"],
            REPLICATION_PASSWORD=found["replication"],
        )

    def node_environment(self, i: int) -> dict[str, str]:
        found = self.secrets()
        return {
            "DATABASE_URL": self.database_url(),
            "RECHARGE_TRUSTED_PROXIES": HOST,
            "RECHARGE_KEY_FILE": str(self.key_file),
            "RECHARGE_ADMIN_TOKEN": found["admin_token"],
            "RECHARGE_SMS_SHARED_SECRET": found["sms_secret"],
            "RECHARGE_DD_HOST": HOST,
            "RECHARGE_HTTP_HOST": HOST,
            "RECHARGE_DRAIN_DELAY_S": "3",  # HAProxy marks a node down after 2 failed checks 1 s apart
        }


def _haproxy_maxconn() -> int:
    """As many connections as this machine's descriptor limit allows HAProxy (two each), at most 60,000."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = hard if hard != resource.RLIM_INFINITY else 1 << 20
    return max(1000, min(60_000, (limit - 200) // 2))


def _render(template: Path, **values: str) -> str:
    return string.Template(template.read_text()).substitute(values)
