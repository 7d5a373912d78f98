"""Framework integrations: the cache where products already call their models.

- ``modelcache_svc.integrations.langchain.ModelCacheSemanticCache``: a LangChain
  ``BaseCache`` for ``set_llm_cache`` (``pip install './clients/python[langchain]'``).
- ``modelcache_svc.integrations.openai.CachedOpenAI`` / ``AsyncCachedOpenAI``:
  an ``openai.OpenAI`` / ``AsyncOpenAI`` client whose ``chat.completions.create``
  asks the cache first, streaming included (``pip install './clients/python[openai]'``).
- ``modelcache_svc.integrations.litellm.ModelCacheLiteLLM``: LiteLLM's cache
  (``litellm.cache = ...``) for ``completion`` / ``acompletion``, streaming included, and
  ``ModelCacheProxyHook`` for the LiteLLM proxy (``pip install './clients/python[litellm]'``).

All fail open: a cache that is down, slow or refusing never fails a model
call and never delays it by more than the cache deadline (``timeout``, 0.25 s
by default). docs/integration.md shows them in use. This package imports
no framework; each module imports its own, and nothing of the server
(the client distribution, clients/python, ships them).
"""
