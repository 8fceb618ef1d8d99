"""Migrations, configuration, key handling and the core rechargectl commands."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from recharge import db
from recharge.config import load_settings
from recharge.keys import KeyFileError, MasterKeys, load_keys, write_keys
from tests.conftest import ROOT


async def test_migrations_apply_to_an_empty_database_and_rerun_is_a_noop(empty_database: str) -> None:
    conn = await asyncpg.connect(empty_database)
    try:
        first = await db.migrate(conn)
        second = await db.migrate(conn)
        tables = {r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")}
    finally:
        await conn.close()
    assert first == [version for version, _ in db.migration_files()]
    assert second == []
    assert {"accounts", "transfers", "orders", "terminals", "cards", "schema_migrations"} <= tables


def test_settings_come_from_toml_then_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "platform.toml"
    config.write_text('dd_port = 9100\nhttp_port = 8100\ndd_idle_timeout_s = 12.5\n')
    monkeypatch.setenv("RECHARGE_HTTP_PORT", "8200")
    settings = load_settings(config)
    assert settings.dd_port == 9100
    assert settings.http_port == 8200
    assert settings.dd_idle_timeout_s == 12.5


def test_unknown_setting_in_toml_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("dd_prot = 1\n")
    with pytest.raises(ValueError, match="dd_prot"):
        load_settings(config)


def test_key_file_round_trip_and_repr_never_shows_keys(tmp_path: Path) -> None:
    keys = MasterKeys.generate(demo=True)
    path = tmp_path / "keys.json"
    write_keys(path, keys)
    loaded = load_keys(path)
    assert loaded == keys
    assert (path.stat().st_mode & 0o777) == 0o600
    for key in (keys.signin, keys.load, keys.tac, keys.maint):
        assert key.hex() not in repr(loaded).lower()


def test_malformed_key_file_error_does_not_echo_the_key(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    secret = "ZZ" * 16
    path.write_text(f'{{"mk_signin": "{secret}", "mk_load": "00", "mk_tac": "00", "mk_maint": "00"}}')
    with pytest.raises(KeyFileError) as err:
        load_keys(path)
    assert secret not in str(err.value)


def _rechargectl(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_rechargectl_help_lists_the_core_commands() -> None:
    result = _rechargectl("--help")
    assert result.returncode == 0
    for command in ("serve", "migrate", "seed-demo", "audit"):
        assert command in result.stdout
    serve_help = _rechargectl("serve", "--help").stdout
    for option in ("--dd-port", "--http-port", "--workers", "--database-url", "--data-dir"):
        assert option in serve_help


def test_rechargectl_migrate_seed_and_audit_pass_on_a_fresh_database(empty_database: str, tmp_path: Path) -> None:
    common = ("--database-url", empty_database, "--data-dir", str(tmp_path))
    assert _rechargectl("migrate", *common).returncode == 0
    seeded = _rechargectl("seed-demo", *common)
    assert seeded.returncode == 0, seeded.stderr
    assert (tmp_path / "keys.json").exists()
    audit = _rechargectl("audit", *common)
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert "OK" in audit.stdout


async def test_rechargectl_audit_exits_nonzero_on_a_corrupted_balance(empty_database: str, tmp_path: Path) -> None:
    common = ("--database-url", empty_database, "--data-dir", str(tmp_path))
    assert _rechargectl("seed-demo", *common).returncode == 0
    conn = await asyncpg.connect(empty_database)
    try:
        await conn.execute("UPDATE accounts SET credits_posted = credits_posted + 7 WHERE kind = 'recharge_fund'")
    finally:
        await conn.close()
    audit = _rechargectl("audit", *common)
    assert audit.returncode == 1
    assert "FAILED" in audit.stdout


def test_every_setting_is_documented_in_operations_guide() -> None:
    from recharge.config import setting_names

    guide = (ROOT / "docs" / "OPERATIONS.md").read_text(encoding="utf-8")
    undocumented = [name for name in setting_names() if f"`{name}`" not in guide]
    assert undocumented == []


async def test_pool_connection_released_mid_transaction_comes_back_clean(pool: asyncpg.Pool) -> None:
    """The pool skips asyncpg's reset query (recharge.db), but a transaction left open is
    still rolled back before the connection is reused."""
    conn = await pool.acquire()
    tx = conn.transaction()
    await tx.start()
    await conn.execute("CREATE TEMP TABLE left_open (x int) ON COMMIT DROP")
    await pool.release(conn)
    for _ in range(pool.get_max_size()):
        async with pool.acquire() as again:
            assert not again.is_in_transaction()
            assert await again.fetchval("SELECT to_regclass('pg_temp.left_open')") is None


async def test_the_pool_opens_its_init_size_at_start_within_its_bounds(database_url: str) -> None:
    """``pool_init_size`` connections are open before the first request (the first sign-ins after a
    start do not wait while the pool grows); it is kept between ``pool_min_size`` and ``pool_max_size``."""
    base = load_settings(None)
    sizes = []
    for init, low, high in ((5, 1, 6), (0, 2, 6), (9, 1, 3)):
        pool = await db.create_pool(database_url, base.replace(pool_init_size=init, pool_min_size=low,
                                                              pool_max_size=high))
        try:
            sizes.append(pool.get_size())
        finally:
            await pool.close()
    assert sizes == [5, 2, 3]
