"""The composition root: serve/runtime, the rechargectl commands, demo data and simulator fixtures.

Everything here wires the domain (``recharge``) to the servers (``server``, ``http_api``) or
talks to an operator; nothing below imports this package.
"""
