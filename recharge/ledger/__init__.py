"""The ledger room: double-entry transfers (transfers), group commit (group_commit), audit."""
