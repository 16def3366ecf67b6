"""Load and scale benchmarks for kontinuum (run them as `python -m benchmarks.<name>`)."""
