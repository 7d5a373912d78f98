"""Both stores in this process's memory (``--scalar-uri memory:// --vector-uri memory://``): a cache that
lives as long as the process, and the stores the core's unit tests run on. Each half is its own module."""

from __future__ import annotations

from . import MEMORY_URI
from .memory_scalar import MemoryScalarStore
from .memory_vector import MemoryVectorStore

__all__ = ["MEMORY_URI", "MemoryScalarStore", "MemoryVectorStore"]
