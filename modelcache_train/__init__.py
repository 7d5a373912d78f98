"""Training for modelcache_svc, a package beside the service: the service never imports it.

- ``data``: labelled pairs, the held-out split, the batch order.
- ``runs``: a run that survives a stop: its folder outside the repository (checkpoints, progress, log), the
  checkpoint that holds everything the next step depends on, the best milestone, a start in the background.
- ``bi_encoder``: CoSENT fine-tuning of an embedding model (``modelcache-svc train``).
- ``cross_encoder``: the verifier (``modelcache-svc train --cross-encoder``).
- ``fit_verifier``: the verifier's band and cut-off, fitted on held-out training pairs.
- ``cli``: the ``train`` command.
"""
