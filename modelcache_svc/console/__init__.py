"""The web console: what a cache holds and serves, and the means to correct it, under /console on the HTTP
port (docs/operations.md, "The console").

A transport like the others: server-rendered pages (Jinja2, autoescaped) over the core's calls, with the
caller's key; no script, a stylesheet of its own, pictures as inline SVG. ``app`` builds it, ``auth`` says who
calls and guards every change, ``pages`` are the pages and forms, ``charts`` the pictures' geometry.
"""

from .app import build_console

__all__ = ["build_console"]
