"""Every sink against the shared contract suites (tests/support/sink_contract.py)."""
