"""What the service accepts: the sizes of a call (Limits) and the names of tenants and models.

Below both the configuration and the core, which use it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import InvalidArgument

TENANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", re.ASCII)
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}$", re.ASCII)


@dataclass(frozen=True)
class Limits:
    max_messages: int = 64
    max_content_chars: int = 32_768
    max_answer_chars: int = 262_144
    max_entries_per_insert: int = 256
    max_ids_per_remove: int = 1_000
    max_metadata_items: int = 32
    max_metadata_chars: int = 4_096
    max_top_k: int = 50
    max_message_bytes: int = 16 * 1024 * 1024


def check_tenant_name(name: object) -> str:
    if not isinstance(name, str) or not TENANT_NAME.match(name):
        raise InvalidArgument(
            f"tenant name {show(name)} is invalid: "
            "1-64 characters of A-Z a-z 0-9 _ . -, starting with a letter or digit"
        )
    return name


def check_model_name(name: object) -> str:
    if not isinstance(name, str) or not MODEL_NAME.match(name):
        raise InvalidArgument(
            f"model name {show(name)} is invalid: "
            "1-128 characters of A-Z a-z 0-9 _ . : / -, starting with a letter or digit"
        )
    return name


def show(value: object) -> str:
    """A value as an error message quotes it: repr, cut at 80 characters."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
