"""Platform settings: defaults, then an optional TOML file, then environment variables.

Every limit the platform enforces is a named setting here, documented in
docs/OPERATIONS.md. Environment variables are ``RECHARGE_<NAME>`` (upper case), except
``DATABASE_URL``. The TOML file (``RECHARGE_CONFIG`` or ``--config``) holds the same names
in lower case at top level.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class Settings:
    """All tunables of one platform process. Units are in the names."""

    # --- where things live
    database_url: str | None = None  # unset: an embedded PostgreSQL under data_dir/pgdata
    data_dir: Path = Path("var")
    # --- listeners
    dd_host: str = "0.0.0.0"
    dd_port: int = 9000
    http_host: str = "0.0.0.0"
    http_port: int = 8080
    workers: int = 1
    # Peers allowed to name the client's address (comma-separated addresses/CIDRs; "" = none):
    # a PROXY v2 header on the DD port, X-Forwarded-For on HTTP. From anyone else the DD
    # header is refused and the HTTP header ignored.
    trusted_proxies: str = ""
    # --- database pool
    pool_min_size: int = 2
    pool_max_size: int = 20
    # Connections the pool opens at start, before the first request (asyncpg's ``init_size``; kept
    # between pool_min_size and pool_max_size): the first sign-ins after a start then find the
    # pool at its working size instead of waiting while it grows (bench/notes.md, issue 20).
    pool_init_size: int = 8
    # Waiting longer than this for a connection answers busy (0xDD / 503). Long enough to ride
    # out a commit stall of a second or two (a checkpoint's fsync), short enough that a
    # terminal (which waits ~10 s) gets a clear answer instead of a timeout.
    pool_acquire_timeout_s: float = 5.0
    statement_timeout_ms: int = 10_000
    # A start that finds the database not ready (still starting, recovering after a crash, or a
    # killed embedded server not yet gone) waits this long, saying so in one line, then exits.
    db_start_wait_s: float = 60.0
    db_connect_timeout_s: float = 5.0  # one connection attempt (start-up probe and pool) gives up after this
    # --- DD server limits
    dd_idle_timeout_s: float = 30.0
    dd_max_connections: int = 10_000
    dd_metrics_flush_s: float = 1.0  # DD frame metrics are counted in plain ints and written out this often
    dd_listen_backlog: int = 4096  # connections the kernel queues before accept (capped by net.core.somaxconn)
    dd_max_frame_length: int = 278  # the frame's length field; 278 is the protocol's maximum
    dd_max_inflight_db_tasks: int = 512  # DD flows waiting on the database at once; more → 0xDD
    shutdown_grace_s: float = 10.0
    # On SIGTERM, /readyz turns 503 at once but the node keeps accepting this long, so a load
    # balancer checking /readyz (HAProxy: inter 1s fall 2) takes it out before it refuses anyone.
    drain_delay_s: float = 0.0
    signin_business_day_end_hour: int = 24  # sign-ins expire at this local hour (24 = midnight)
    # Sign-in lockout (docs/PROTOCOL.md "Sign-in failures and the lockout"): this many failed
    # sign-ins in a row *after the module proved its key* lock the terminal for
    # signin_lock_base_s, doubled for each further lock without a success, at most signin_lock_max_s.
    signin_max_failures: int = 5
    signin_lock_base_s: int = 60
    signin_lock_max_s: int = 3600
    # Failures before the proof never lock; this many of one terminal within signin_probe_window_s
    # mark it as targeted (a WARNING line, the recharge_signin_targeted_terminals gauge).
    signin_probe_window_s: int = 600
    signin_probe_alert: int = 20
    # A recharge, query or deposit must come from the network its terminal signed in from: the
    # signing-in address's first N bits (32 / 128: the address itself; 0: anywhere, for terminals
    # that roam behind NAT). A mismatch is answered 0xBB: the terminal signs in again from there.
    dd_signin_bind_ipv4_prefix: int = 32
    dd_signin_bind_ipv6_prefix: int = 128
    dd_terminal_cache_ttl_s: float = 1.0  # DD01 answers from a terminal cache this fresh (0 = always ask the DB)
    dd_max_deposit_cents: int = 100_000  # the largest card deposit a DD73 may open
    # --- orders and ledger
    order_expiry_s: int = 24 * 3600
    order_max_amount_cents: int = 100_000  # 1,000 yuan per order
    sweeper_interval_s: float = 5.0
    terminal_signin_history_days: int = 90  # DD sign-ins (terminal_signins) are kept this long, then purged
    retention_purge_interval_s: float = 3600.0  # how often the sweeper purges what is past its retention
    ledger_max_retries: int = 10
    ledger_batch_max: int = 32  # DD recharge steps sharing one transaction/commit (group commit)
    ledger_batch_max_wait_ms: float = 1.0  # how long a batch waits for more steps before it runs
    ledger_batch_queue_depth: int = 1024  # DD steps waiting for a batch; more → 0xDD
    ledger_batch_pipeline: int = 1  # batches in flight per lane (2: one runs while the previous commits)
    ledger_batch_linger_ms: float = 200.0  # a lane keeps its idle connections this long (skips the pool reset)
    ledger_batch_max_readers: int = 4  # DD11 reads the read gate runs at once; more wait their turn
    ledger_batch_lookup_runners: int = 1  # DD11 lookup statements the read gate runs at once; lookups arriving meanwhile share the next
    # --- order API
    order_api_timestamp_window_s: int = 300
    order_api_session_ttl_s: int = 1800  # an APPLLogin serial is usable this long
    order_api_max_query_rows: int = 100  # AcctQueryLNT lists at most this many orders
    order_api_min_rsa_bits: int = 2048  # smaller platform public keys are refused
    order_api_max_reqinfo_entries: int = 32  # reader replies one request may carry
    # --- HTTP
    http_max_body_bytes: int = 64 * 1024
    # --- HTTP connections (docs/OPERATIONS.md "Security"): per worker
    http_max_connections: int = 1000  # at the limit the longest-idle connection makes room; all busy → 503
    http_header_timeout_s: float = 10.0  # a request's headers complete within this (from connect or first byte)
    http_body_timeout_s: float = 10.0  # its body arrives in full within this after the headers
    http_keepalive_timeout_s: float = 75.0  # an idle keep-alive connection is closed after this
    fd_reserve: int = 100  # descriptors kept for files, listeners, the loop: DD + HTTP ≤ NOFILE − pool − this
    # scheme://host[:port][/prefix] clients reach the HTTP API at (behind a proxy: the proxy's);
    # the WSDLs' service address. Unset: the local address each connection reached.
    http_public_base_url: str | None = None
    admin_token: str | None = None  # unset: admin endpoints answer 403
    sms_shared_secret: str | None = None  # unset: the SMS hook answers 403
    sms_allowed_networks: str = ""  # comma-separated CIDRs the SMS gateway calls from ("" = any address)
    sms_max_message_chars: int = 160  # a longer inbound SMS text is refused unread (one GSM SMS)
    sms_max_reply_chars: int = 70  # a reply fits one Chinese (UCS-2) SMS; longer texts are cut
    # --- KaKaTong card service (SPEC 3.1; docs/OPERATIONS.md "KaKaTong")
    kkt_gateway_open: bool = True  # False: every KaKaTong request answers 51 (gateway closed)
    kkt_group_commit: bool = True  # trades of concurrent requests share one transaction and commit (False: each its own)
    kkt_duplicate_window_s: int = 24 * 3600  # same card+terminal+trade+amount within it: 12
    kkt_max_amount_cents: int = 100_000_000  # an AMOUNT above this is malformed (02)
    kkt_per_txn_limit_cents: int = 1_000_000  # per-trade limit (09) for cards without their own
    kkt_terminal_daily_recharge_cents: int = 10_000_000  # per-terminal daily recharge (58) default
    kkt_card_daily_count: int = 100  # trades per card per day (67) for cards without their own
    kkt_test_mode_daily_max: int = 100  # trades per merchant per day on a test-mode key (68)
    kkt_password_max_failures: int = 5  # wrong passwords in a row that lock the card
    kkt_password_lock_s: int = 24 * 3600  # how long such a lock lasts
    kkt_password_hash_iterations: int = 1000  # PBKDF2-SHA256 rounds over the peppered MD5
    kkt_cancel_window_s: int = 30 * 24 * 3600  # a cancel names a trade at most this old (06)
    kkt_reversal_window_s: int = 24 * 3600  # a 0400 reversal finds trades at most this old
    kkt_history_max_rows: int = 200  # records one tSRequest answers at most
    kkt_reference_cache_ttl_s: float = 1.0  # license keys, terminals, service codes, points rules cached this long (0 = off)
    kkt_reference_cache_max_entries: int = 100_000  # bound on that cache; the oldest entries go first
    # --- operator console (/console/; docs/OPERATIONS.md "Operator console")
    console_enabled: bool = True  # False: /console/ is not served at all
    console_password_max_failures: int = 5  # wrong passwords in a row that lock an operator
    console_password_lock_s: int = 15 * 60  # how long such a lock lasts
    console_password_min_length: int = 12  # a new operator password has at least this many characters
    console_session_idle_s: int = 30 * 60  # a session unused this long ends
    console_session_max_s: int = 12 * 3600  # a session ends this long after sign-in, however used
    console_page_rows: int = 50  # rows per page of every console list
    console_max_batch_cards: int = 100_000  # cards one console batch may generate
    console_signin_history_days: int = 90  # operator sign-in attempts are kept this long
    console_argon2_time_cost: int = 2  # argon2id of new operator passwords (OWASP's minimum: t=2,
    console_argon2_memory_kib: int = 19 * 1024  # m=19 MiB, p=1); a stored hash keeps its own
    console_argon2_parallelism: int = 1
    # --- mobile payment account (SPEC 6; docs/OPERATIONS.md "Mobile payment")
    mpay_sms_service_number: str = "10658888"  # /sms/inbound routes `to` = this (+ up to 6 digits) here
    mpay_dialogue_ttl_s: int = 600  # an SMS dialogue ends this long after the MO that last advanced it
    mpay_mo_dedup_s: int = 7 * 24 * 3600  # a repeated (from, id) within this gets the first reply
    mpay_password_max_failures: int = 5  # wrong entries in a row that lock a password
    mpay_password_lock_s: int = 24 * 3600  # how long such a lock lasts
    mpay_argon2_time_cost: int = 2  # argon2id parameters of passwords and security answers
    mpay_argon2_memory_kib: int = 19 * 1024
    mpay_argon2_parallelism: int = 1
    mpay_otp_ttl_s: int = 300  # a one-time code is valid this long
    mpay_otp_max_failures: int = 3  # wrong entries that void a one-time code
    mpay_otp_min_interval_s: int = 60  # one code per destination per this many seconds
    mpay_otp_daily_max: int = 10  # codes per destination per Shanghai day
    mpay_cards_provinces: str = "430000"  # prepaid cards of these provinces are accepted (comma list)
    mpay_cards_msisdn_failures: int = 5  # unknown PINs of one MSISDN in 24 h that block it 24 h
    mpay_cards_msisdn_block_s: int = 24 * 3600
    mpay_cards_platform_failures: int = 1000  # unknown PINs platform-wide in an hour that pause cards
    mpay_cards_platform_pause_s: int = 15 * 60
    mpay_hf_min_cents: int = 100  # phone-bill payment range
    mpay_hf_max_cents: int = 50_000
    mpay_hf_blocked_provinces: str = "440000,310000,350000,540000"  # 广东 上海 福建 西藏
    mpay_auth_fail_per_ip: int = 20  # failed logins per client address a minute; more answer 1006
    mpay_session_idle_s: int = 30 * 60  # a website/operator token lapses this long after its last request
    mpay_session_max_s: int = 8 * 3600  # ... or this long after login
    mpay_pay_open_per_payer: int = 5  # unconfirmed payments per merchant and payer (1006)
    mpay_payment_ttl_s: int = 15 * 60  # a payment not confirmed within this expires
    mpay_merchant_clock_skew_s: int = 300  # a merchant's X-Timestamp may be this far off
    mpay_request_id_days: int = 7  # replies kept per X-Request-Id this long
    mpay_refund_enabled: bool = False  # seed: 暂时屏蔽 (4015)
    mpay_cutoff: str = "17:00"  # a working day's batch closes at this Shanghai time (payout export, merchant payout)
    mpay_withdrawal_export_days: int = 2  # working days after its batch day before an unexported withdrawal alerts
    mpay_security_questions: int = 8  # question ids 1..N of the security centre (3 distinct are set)
    mpay_reset_daily_failures: int = 3  # failed identity checks of a pay reset per day and channel (3008)
    mpay_ivr_secret: str | None = None  # X-Gateway-Secret of the IVRs; unset: every IVR request refused
    mpay_outbox_url: str | None = None  # Kannel sendsms URL; unset: notices wait in /mpay/v1/ops/sms-sink
    mpay_outbox_username: str = ""
    mpay_outbox_password: str = ""
    mpay_outbox_dlr_base: str = "http://127.0.0.1:8080"  # this platform's URL as Kannel reaches it
    mpay_outbox_first_retry_s: float = 5.0  # retry after 5 s, doubling ...
    mpay_outbox_max_retry_s: float = 600.0  # ... to 10 min
    mpay_outbox_give_up_s: int = 24 * 3600  # then failed (alert)
    mpay_outbox_interval_s: float = 0.5  # how often the dispatcher looks for due messages
    mpay_outbox_batch: int = 50  # messages one dispatcher pass sends at most
    # --- SIM wallet (SPEC 7; docs/OPERATIONS.md "SIM wallet")
    wallet_max_body_bytes: int = 1024 * 1024  # STK and POS bodies (SPEC 6.12: at most 1 MiB; a batch holds 1,000 records)
    wallet_cap_cents: int = 100_000  # a wallet's balance cap, shadow and waiting loads included (5003; SPEC 7.1)
    wallet_air_min_cents: int = 100  # one air recharge (空中充值) 1.00–500.00 (4001)
    wallet_air_max_cents: int = 50_000
    wallet_air_day_count: int = 5  # air recharges a day per account, counted at creation, voided ones too (5004)
    wallet_air_day_cents: int = 50_000  # ... and their total a day (5004)
    wallet_load_min_cents: int = 100  # every other load 1.00–1,000.00 (4001)
    wallet_load_max_cents: int = 100_000
    wallet_handset_blacklist: str = ""  # handset models the counter's SIM swap refuses (5012), comma list
    wallet_cancel_permit_s: int = 600  # how long the counter's 退订 lets the hall POS buy the wallet out (7.7)
    wallet_history_max_days: int = 366  # longest day range of the website's wallet history (longer: 4001)
    wallet_writeoff_idle_months: int = 24  # lost cards' value idle this long is written off RETIRED → FEE (7.6)
    wallet_shadow_audit_interval_s: float = 300.0  # how often the sweeper counts negative wallet shadows (gauges)
    # --- observability
    log_level: str = "INFO"
    prometheus_multiproc_dir: Path | None = None
    loop_lag_interval_s: float = 0.25  # how often the event-loop lag probe sleeps and measures
    loop_lag_warn_s: float = 0.1  # a probe woken later than this also logs a warning
    # --- keys (paths, never the keys themselves)
    key_file: Path | None = None  # default data_dir/keys.json (demo keys are generated there)

    @property
    def resolved_key_file(self) -> Path:
        return self.key_file or self.data_dir / "keys.json"

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


_ENV_PREFIX = "RECHARGE_"


def _coerce(kind: Any, raw: Any) -> Any:
    text = str(raw)
    kind_name = kind if isinstance(kind, str) else getattr(kind, "__name__", str(kind))
    if "Path" in kind_name:
        return Path(text) if text else None
    if kind_name.startswith("int"):
        return int(text)
    if kind_name.startswith("float"):
        return float(text)
    if kind_name.startswith("bool"):
        return text.lower() in ("1", "true", "yes", "on")
    return text


def setting_names() -> list[str]:
    return [f.name for f in dataclasses.fields(Settings)]


def load_settings(config_file: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Defaults ← TOML file ← environment ← explicit overrides (CLI flags)."""
    values: dict[str, Any] = {}
    types = {f.name: f.type for f in dataclasses.fields(Settings)}
    path = config_file or os.environ.get(_ENV_PREFIX + "CONFIG")
    if path:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
        unknown = set(data) - set(types)
        if unknown:
            raise ValueError(f"unknown settings in {path}: {', '.join(sorted(unknown))}")
        for name, raw in data.items():
            values[name] = _coerce(types[name], raw)
    for name in setting_names():
        env_name = "DATABASE_URL" if name == "database_url" else _ENV_PREFIX + name.upper()
        if env_name in os.environ and os.environ[env_name] != "":
            values[name] = _coerce(types[name], os.environ[env_name])
    for name, value in overrides.items():
        if value is not None:
            values[name] = value
    return Settings(**values)
