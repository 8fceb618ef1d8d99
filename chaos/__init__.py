"""The chaos harness (``make chaos``): the real platform under a seeded schedule of faults, checked afterwards."""
