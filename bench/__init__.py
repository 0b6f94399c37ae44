"""The load harness of ``make bench``: real server processes, load generators in separate
processes, every message counted (docs/performance.md)."""
