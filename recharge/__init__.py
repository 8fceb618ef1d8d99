"""Shared domain code of both servers: config, database, ledger, keys, cards, orders, CLI."""
