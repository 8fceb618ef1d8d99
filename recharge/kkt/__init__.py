"""The KaKaTong card service room (SPEC 3): cards, trades, reference-data cache, SMS commands."""
