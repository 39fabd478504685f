"""Payloads to Parquet and back: bulk and exact parsing, the one place for writer options, merging."""
