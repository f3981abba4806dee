"""Pieces every aggregate uses and none owns: hashing and keyed digests, durations and
timestamps, paging. Pure (standard library and app.errors only)."""
