"""The benchmark harness: `make bench` (see the README, section Benchmark)."""
