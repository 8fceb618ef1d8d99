"""Operators of the console: accounts, passwords and lockout, server-side sessions."""
