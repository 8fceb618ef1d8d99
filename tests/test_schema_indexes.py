"""The schema's indexes earn their upkeep: none is a leading prefix of another on the same table.

Every index costs an entry on each row written and on each update that cannot be HOT (a DD recharge
writes a transfer and rewrites its reservation twice, bench/notes.md issue 20 session 8). A plain
b-tree index whose columns lead another plain b-tree index on the same table answers nothing the
longer one does not, so it is only upkeep: migration 0403 dropped the two the ledger had.
"""

from __future__ import annotations

import json

import asyncpg

# Plain b-tree indexes (no predicate, no expression, not unique) of the public schema, with the
# other b-tree indexes without a predicate on the same table whose key columns start with theirs.
_REDUNDANT = """
WITH ix AS (
    SELECT i.indexrelid::regclass::text AS name, i.indrelid, i.indisunique AS is_unique,
           (SELECT array_agg(k ORDER BY o) FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS u(k, o)
            WHERE o <= i.indnkeyatts) AS cols,
           i.indpred IS NULL AS whole, i.indexprs IS NULL AS plain
    FROM pg_index i
    JOIN pg_class c ON c.oid = i.indexrelid
    JOIN pg_am am ON am.oid = c.relam AND am.amname = 'btree'
    JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'
    WHERE i.indisvalid
)
SELECT a.indrelid::regclass::text AS table_name, a.name AS redundant, b.name AS covered_by
FROM ix a JOIN ix b ON b.indrelid = a.indrelid AND b.name <> a.name
WHERE NOT a.is_unique AND a.whole AND a.plain AND b.whole AND b.plain
  AND cardinality(a.cols) <= cardinality(b.cols) AND b.cols[1:cardinality(a.cols)] = a.cols
ORDER BY 1, 2, 3
"""


async def test_no_index_is_a_leading_prefix_of_another_on_its_table(conn: asyncpg.Connection) -> None:
    found = [tuple(r) for r in await conn.fetch(_REDUNDANT)]
    assert found == [], f"(table, redundant index, the index that covers it): {found}"


async def _plan_indexes(conn: asyncpg.Connection, query: str, *args: object) -> set[str]:
    """The indexes PostgreSQL's plan for ``query`` reads, sequential scans ruled out."""
    async with conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")
        plan = json.loads(await conn.fetchval(f"EXPLAIN (FORMAT JSON) {query}", *args))
    found: set[str] = set()

    def walk(node: dict[str, object]) -> None:
        if isinstance(node.get("Index Name"), str):
            found.add(str(node["Index Name"]))
        for child in node.get("Plans", []):  # type: ignore[attr-defined]
            walk(child)

    walk(plan[0]["Plan"])
    return found


async def test_a_transfers_lookup_by_one_side_reads_that_sides_account_and_time_index(
    conn: asyncpg.Connection,
) -> None:
    """What ``transfers_debit`` / ``transfers_credit`` answered before 0403 dropped them is answered by
    the (account, created_at) index of the same side."""
    debit = await _plan_indexes(conn, "SELECT id FROM transfers WHERE debit_account_id = $1", 1)
    credit = await _plan_indexes(
        conn, "SELECT amount FROM transfers WHERE credit_account_id = ANY($1::bigint[])", [1, 2]
    )
    either = await _plan_indexes(
        conn, "SELECT id FROM transfers WHERE debit_account_id = $1 OR credit_account_id = $1", 1
    )
    assert debit == {"transfers_debit_time"}
    assert credit == {"transfers_credit_time"}
    assert either == {"transfers_debit_time", "transfers_credit_time"}
