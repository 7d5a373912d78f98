"""Tools that drive a real service for measurement (eval --online, ...): each hooked into cli.py by one verb or flag."""
