"""The speed and quality benchmarks, one measurement per module, each run from the repository root
as ``python -m benchmarks.NAME`` (``python -m benchmarks.run_all`` runs the speed ones and writes
the table)."""
