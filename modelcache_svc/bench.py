"""Placeholder until the bench verb lands: it says so instead of pretending."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_parser(sub: Any) -> None:
    sub.add_parser("bench", help="not built yet")


def run(args: argparse.Namespace, environ: dict[str, str]) -> int:
    print("modelcache-svc bench: not built yet", file=sys.stderr)
    return 2
