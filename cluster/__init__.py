"""A real cluster on one machine — HAProxy, N platform nodes, PostgreSQL ×2 under Patroni — and its failover test."""
