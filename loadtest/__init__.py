"""Locust load tests: HTTP users and simulated DD terminals with virtual cards."""
