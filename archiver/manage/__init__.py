"""Keeping the archive in shape: compaction, retention, import, statistics."""
