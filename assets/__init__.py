"""Dagster assets and asset checks, one module per artifact family. Thin: each asset calls the
domain library, writes its artifact itself and returns a `MaterializeResult`."""
