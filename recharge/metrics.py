"""Every Prometheus metric the platform exports, in one place (prefix ``recharge_``).

Names follow the Prometheus conventions: base units last (``_seconds``), counters end in
``_total``, labels have low cardinality (a stage, a result code, a route) and never carry a
card, terminal or order number. With ``--workers N`` the process sets
``PROMETHEUS_MULTIPROC_DIR`` before this module is imported (see ``app.runtime``) and
``render`` merges every worker's values.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from prometheus_client import REGISTRY as DEFAULT_REGISTRY
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

# Sub-millisecond resolution for per-stage work: most DD stages take 100 µs – 5 ms.
LATENCY_BUCKETS_S = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)

# --- DD server
DD_CONNECTIONS_ACTIVE = Gauge(
    "recharge_dd_connections_active", "Open DD terminal connections", multiprocess_mode="livesum"
)
DD_CONNECTIONS = Counter("recharge_dd_connections_total", "DD connections accepted")
DD_CONNECTIONS_REFUSED = Counter(
    "recharge_dd_connections_refused_total",
    "DD connections refused at the connection limit (none of the quiet longest was between flows)"
)
DD_CONNECTIONS_EVICTED = Counter(
    "recharge_dd_connections_evicted_total",
    "DD connections closed at the connection limit to make room (the one quiet longest between flows)"
)
DD_FRAMES = Counter(
    "recharge_dd_frames_total", "DD frames answered, by request stage and result code", ["stage", "result"]
)
DD_PROTOCOL_ERRORS = Counter(
    "recharge_dd_protocol_errors_total", "DD connections closed for a malformed frame or timeout", ["reason"]
)
DD_STAGE_SECONDS = Histogram(
    "recharge_dd_stage_duration_seconds",
    "Time from a DD request frame to its answer, by request stage",
    ["stage"],
    buckets=LATENCY_BUCKETS_S,
)
RECHARGES = Counter("recharge_recharges_total", "Completed recharge flows by result code", ["result"])
SIGNIN_FAILURES = Counter(
    "recharge_signin_failures_total",
    "Failed DD sign-ins by reason; proven=true: after the module proved its key (those count towards the lock)",
    ["reason", "proven"],
)
SIGNIN_LOCKOUTS = Counter("recharge_signin_lockouts_total", "DD terminals locked by failed sign-ins")
SIGNIN_LOCKED_TERMINALS = Gauge(
    "recharge_signin_locked_terminals", "DD terminals locked now (failed sign-ins or an operator)",
    multiprocess_mode="max",
)
SIGNIN_TARGETED_TERMINALS = Gauge(
    "recharge_signin_targeted_terminals",
    "DD terminals with signin_probe_alert or more failed sign-ins before any proof within signin_probe_window_s",
    multiprocess_mode="max",
)
SIGNIN_BINDING_REFUSALS = Counter(
    "recharge_signin_binding_refusals_total",
    "DD requests answered 0xBB because they came from another network than their terminal's sign-in",
)
BUSY_ANSWERS = Counter(
    "recharge_busy_answers_total", "Requests answered busy (DD 0xDD, HTTP 503)", ["interface"]
)
LOADS_LOADING = Gauge(
    "recharge_loads_loading", "Loads left in the loading state (MAC2 sent, outcome unknown)",
    multiprocess_mode="max",
)
LOADS_LOADING_OLDEST_AGE = Gauge(
    "recharge_loads_loading_oldest_age_seconds", "Age of the oldest load still loading",
    multiprocess_mode="max",
)

# --- HTTP side
HTTP_REQUESTS = Counter(
    "recharge_http_requests_total", "HTTP requests by route, method and status", ["route", "method", "status"]
)
HTTP_CONNECTIONS_ACTIVE = Gauge(
    "recharge_http_connections_active", "Open HTTP connections", multiprocess_mode="livesum"
)
HTTP_CONNECTIONS = Counter("recharge_http_connections_total", "HTTP connections accepted")
HTTP_CONNECTIONS_CLOSED = Counter(
    "recharge_http_connections_closed_total",
    "HTTP connections the platform closed to protect itself (refused, evicted, header_timeout, body_timeout)",
    ["reason"],
)
HTTP_PROTOCOL_ERRORS = Counter(
    "recharge_http_protocol_errors_total",
    "Malformed HTTP requests the server refused before routing (400), by parser error", ["reason"],
)
HTTP_SECONDS = Histogram(
    "recharge_http_request_duration_seconds", "HTTP request duration by route", ["route"],
    buckets=LATENCY_BUCKETS_S,
)
ORDER_API_REQUESTS = Counter(
    "recharge_order_api_requests_total", "Order API requests by endpoint and outcome", ["endpoint", "outcome"]
)
KKT_TRADES = Counter(
    "recharge_kkt_trades_total", "KaKaTong requests by method and return code", ["method", "code"]
)
KKT_PASSWORD_CHECKS = Counter(
    "recharge_kkt_password_checks_total",
    "KaKaTong card password checks by outcome (right, wrong, locked: refused unchecked during a lock)",
    ["outcome"],
)
WALLET_REQUESTS = Counter(
    "recharge_wallet_requests_total", "SIM wallet STK and POS requests by channel, route and result code",
    ["channel", "route", "code"],
)
WALLET_SUSPENSE = Counter(
    "recharge_wallet_suspense_total", "Voided wallet purchases of closed accounts moved to SUSPENSE (SPEC 7.4)"
)
WALLET_LOADS = Counter(
    "recharge_wallet_loads_total",
    "SIM wallet loads by path (air, pos, transfer, bank, swap) and result: created, posted, or the refusal code"
    " of a creation or a round (5008 a card step failed, 5006 a load in progress, 5004 the air day limits, ...)",
    ["path", "result"],
)
WALLET_LOADS_LOADING = Gauge(
    "recharge_wallet_loads_loading", "SIM wallet loads left loading (MAC2 sent, outcome unknown)",
    multiprocess_mode="max",
)
WALLET_LOADS_LOADING_OLDEST_AGE = Gauge(
    "recharge_wallet_loads_loading_oldest_age_seconds", "Age of the oldest SIM wallet load still loading",
    multiprocess_mode="max",
)
WALLET_RECORDS = Counter(
    "recharge_wallet_purchase_records_total",
    "Uploaded purchase records by result code (0000 cleared, 5008 TAC failure, 5007 unknown card, 5011 duplicate)",
    ["code"],
)
WALLET_SWAPS = Counter(
    "recharge_wallet_swaps_total",
    "SIM swaps with the balance carried over (SPEC 7.6) by step: buy_out (the old card bought out at a hall POS),"
    " bind (a new RFID-SIM bound at the counter)",
    ["step"],
)
WALLET_SHADOWS_NEGATIVE = Gauge(
    "recharge_wallet_shadows_negative", "SIM wallet shadows W/<acct> below zero (SPEC 7.4: only while a load is"
    " unresolved)", multiprocess_mode="max",
)
WALLET_SHADOWS_UNEXPLAINED = Gauge(
    "recharge_wallet_shadows_unexplained", "SIM wallet shadows below zero with no load unresolved: a card spent"
    " value the platform never loaded", multiprocess_mode="max",
)
WALLET_CANCELS = Counter(
    "recharge_wallet_cancels_total",
    "Wallets cancelled or set pending closure (SPEC 7.7) by path: counter (hall buy-out), number_event (销号),"
    " closed_by_upload (a pending-closure wallet whose shadow reached 0)",
    ["path"],
)
SOAP_FAULTS = Counter(
    "recharge_soap_faults_total",
    "SOAP faults by route, whose fault (client: the request; server: ours) and HTTP status; SOAP 1.1"
    " answers client faults with 500 too",
    ["route", "fault", "status"],
)
SMS_REQUESTS = Counter("recharge_sms_requests_total", "Inbound SMS by command and outcome", ["command", "outcome"])
MPAY_REQUESTS = Counter(
    "recharge_mpay_requests_total", "Mobile payment requests by channel and result code (SPEC 6.10)",
    ["channel", "code"],
)
MPAY_OUTBOX = Counter(
    "recharge_mpay_outbox_total", "Outbound SMS delivery attempts by result (sent, retry, failed)", ["result"]
)
MPAY_OUTBOX_PENDING = Gauge(
    "recharge_mpay_outbox_pending", "Outbound SMS waiting for delivery", multiprocess_mode="max"
)
MPAY_BANK_SUSPENSE = Counter(
    "recharge_mpay_bank_suspense_total", "Bank notices whose money went to SUSPENSE (amount mismatch, closed account)"
)
MPAY_WITHDRAWALS_WAITING_AGE = Gauge(
    "recharge_mpay_withdrawals_unexported_oldest_age_seconds", "Age of the oldest submitted, unexported withdrawal",
    multiprocess_mode="max",
)
MPAY_WITHDRAWALS_OVERDUE = Gauge(
    "recharge_mpay_withdrawals_unexported_overdue_seconds",
    "How long ago the oldest unexported withdrawal fell due for export (operator calendar, 17:00 cut-off)",
    multiprocess_mode="max",
)
MPAY_OUTBOX_FAILED = Gauge(
    "recharge_mpay_outbox_failed", "Outbound SMS given up in the last 24 hours", multiprocess_mode="max"
)

# --- ledger, database, loop
LEDGER_TRANSFERS = Counter(
    "recharge_ledger_transfers_total", "Ledger operations by kind and result", ["kind", "result"]
)
LEDGER_BATCH_SIZE = Histogram(
    "recharge_ledger_batch_size", "DD steps committed per batched (group-commit) transaction",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
KKT_BATCH_SIZE = Histogram(
    "recharge_kkt_batch_size", "KaKaTong trades committed per batched (group-commit) transaction",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
LEDGER_LOOKUP_BATCH_SIZE = Histogram(
    "recharge_ledger_lookup_batch_size", "DD11 reads answered per lookup statement (ReadGate.lookup)",
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
LEDGER_RETRIES = Counter("recharge_ledger_retries_total", "Transactions retried after deadlock/serialization")
SWEPT_TRANSFERS = Counter("recharge_swept_transfers_total", "Pending transfers voided by timeout")
PURGED_ROWS = Counter("recharge_purged_rows_total", "Rows deleted past their retention", ["table"])
DB_POOL_CONNECTIONS = Gauge(
    "recharge_db_pool_connections", "Database pool connections by state", ["state"], multiprocess_mode="livesum"
)
DB_POOL_WAITING = Gauge(
    "recharge_db_pool_waiting", "Tasks waiting for a database connection", multiprocess_mode="livesum"
)
EVENT_LOOP_LAG = Histogram(
    "recharge_event_loop_lag_seconds", "How late the event loop ran a timer", buckets=LATENCY_BUCKETS_S
)
ORDER_EXPIRY_SECONDS = Gauge(
    "recharge_order_expiry_seconds", "Configured order expiry (the pending reservation's timeout)",
    multiprocess_mode="max",
)


_BEFORE_RENDER: set[Callable[[], None]] = set()
CHILDREN_KEPT_MAX = 4096  # labelled children ``child`` keeps (the label sets are small; this bounds a surprise)
_CHILDREN: dict[tuple[object, tuple[str, ...]], Any] = {}


def child(metric: Counter | Gauge | Histogram, *labels: str) -> Any:
    """``metric.labels(*labels)``, kept for the next call: prometheus_client checks the label
    values and takes a lock on every ``labels()``, which per HTTP request and per card trade
    cost more than the increment itself (docs/BENCHMARKS.md). Beyond ``CHILDREN_KEPT_MAX``
    children (label values a client chose, such as an HTTP method) it is ``labels()`` again."""
    key = (metric, labels)
    found = _CHILDREN.get(key)
    if found is None:
        found = metric.labels(*labels)
        if len(_CHILDREN) < CHILDREN_KEPT_MAX:
            _CHILDREN[key] = found
    return found


def before_render(hook: Callable[[], None]) -> Callable[[], None]:
    """Call ``hook`` before every scrape this process serves (a component that counts in plain
    integers writes them out: server/frame_metrics.py); returns the function that removes it."""
    _BEFORE_RENDER.add(hook)
    return lambda: _BEFORE_RENDER.discard(hook)


def render() -> tuple[bytes, str]:
    """The exposition text for a scrape (merged across workers in multiprocess mode).

    Announced as text format 0.0.4, which every Prometheus 2.x scraper parses (our metric
    names are all legacy-charset, so the body is the same in both versions).
    """
    for hook in list(_BEFORE_RENDER):
        hook()
    return generate_latest(_registry()), CONTENT_TYPE_PLAIN_0_0_4


def _registry() -> CollectorRegistry:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry
    return DEFAULT_REGISTRY


def counter_totals(counter: Counter, label: str) -> dict[str, float]:
    """A counter's values summed by one of its labels, over every worker (the console's
    dashboard: counts since the processes started)."""
    name = counter._name + "_total"  # prometheus_client strips _total from a counter's name
    totals: dict[str, float] = {}
    for family in _registry().collect():
        for sample in family.samples:
            if sample.name == name and label in sample.labels:
                key = sample.labels[label]
                totals[key] = totals.get(key, 0.0) + sample.value
    return dict(sorted(totals.items()))
