"""Sources: one module per vendor API, each turning pages of vendor JSON into a `Sweep`."""
