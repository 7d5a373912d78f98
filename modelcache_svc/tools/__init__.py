"""Command-line tools beside the service: evaluation and benchmark helpers (eval --online, ...), each
hooked into cli.py by one verb or flag."""
