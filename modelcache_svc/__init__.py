"""modelcache_svc: a semantic cache for LLM products, run as its own service."""

__version__ = "0.1.0"
