"""The DD protocol server: sans-IO terminal sessions, flows, asyncio glue and database work."""
