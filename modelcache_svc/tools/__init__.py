"""Command-line tools beside the service: evaluation and benchmark helpers."""
