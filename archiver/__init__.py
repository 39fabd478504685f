"""archiver: keep the Fly.io log stream as zstd Parquet, searchable."""

__version__ = "0.1.0"
