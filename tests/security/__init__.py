"""Hostile vendors, receivers, terminals and configs: each attack a test (issue 15)."""
