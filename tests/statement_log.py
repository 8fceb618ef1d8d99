"""Every statement sent on the connections some ``KeptConnections`` hand out, logged with asyncpg's query
logger: the one tool of the statement-count tests (tests/test_dd_statements.py, tests/test_kkt_statements.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import asyncpg

# asyncpg's own, once per connection and type (it learns the array types' codecs): not the platform's work.
INTROSPECTION = ("typeinfo_tree", "set_config('jit'", "current_setting('jit')")


def without_introspection(seen: Iterable[str]) -> list[str]:
    """The statements logged, less asyncpg's one-off type introspection."""
    return [q for q in seen if not any(mark in q for mark in INTROSPECTION)]


@contextmanager
def logged(kept: Iterable[Any]) -> Iterator[list[str]]:
    """Every statement (whitespace folded) sent on a connection any of ``kept`` (each a
    ``recharge.db.KeptConnections``) takes from now on, until the block ends."""
    kept = list(kept)
    seen: list[str] = []

    def log(record: Any) -> None:
        seen.append(" ".join(record.query.split()))

    def logging_acquire(acquire: Any) -> Any:
        def acquired(*args: Any, **kwargs: Any) -> Any:
            holder = acquire(*args, **kwargs)

            class Logging:
                async def __aenter__(self) -> asyncpg.Connection:
                    self.conn = await holder.__aenter__()
                    self.conn.add_query_logger(log)
                    return self.conn

                async def __aexit__(self, *exc: Any) -> Any:
                    self.conn.remove_query_logger(log)
                    return await holder.__aexit__(*exc)

            return Logging()

        return acquired

    originals = [k._acquire for k in kept]
    for k in kept:
        k._acquire = logging_acquire(k._acquire)
    try:
        yield seen
    finally:
        for k, original in zip(kept, originals, strict=True):
            k._acquire = original
