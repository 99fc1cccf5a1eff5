"""Benchmarks: clipcore against the reference implementations, same inputs, same run (pytest benchmarks)."""
