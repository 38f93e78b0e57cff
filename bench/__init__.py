"""``python -m bench``: measured throughput of each backend, side by side."""
