"""Where the verifier decides, and what it decided: pure functions of similarities and probabilities.

With the verifier on, a candidate's similarity s (common threshold scale) falls in one of three places:
- s >= max(threshold, band_high): the cosine serves alone (the verifier is not asked);
- low <= s < max(threshold, band_high): the verifier reads both questions and serves when its
  probability is at least the cut-off (the tenant's, else the model's fitted one);
- s < low: never served.
``low`` is the band's own lower edge under the server's default threshold, and the threshold itself when
one is given (by the request or the tenant): a given threshold stays a floor no hit goes below, and the
verifier only ever takes hits away above it. The band and the cut-off are fitted on held-out training
pairs (modelcache_train/fit_verifier.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InvalidArgument
from ..records import TenantConfig

# Uncertain candidates the verifier reads per query, best similarity first (one model call for all): the
# answer is one of the best few, and each pair costs about 1 ms (verifier/model.py).
MAX_VERIFIED = 3


@dataclass(frozen=True, slots=True)
class Gate:
    low: float
    high: float
    cutoff: float

    def floor(self, threshold: float) -> float:
        """The lowest similarity worth reading from the vector store."""
        return min(self.low, threshold)

    def sure(self, similarity: float, threshold: float) -> bool:
        return similarity >= max(threshold, self.high)

    def uncertain(self, similarity: float, threshold: float) -> bool:
        return self.low <= similarity < max(threshold, self.high)


def verifier_applies(config: TenantConfig) -> bool:
    """Whether a tenant's questions go through the verifier: by default on the server's own embedding models
    only, the ones its band and cut-off were fitted against; a tenant on a model of its own (another
    similarity scale) gets it when it asks (``verifier: true``), and ``verifier: false`` turns it off."""
    if config.verifier is not None:
        return config.verifier
    return not config.embedding_model


def gate_for(
    band_low: float, band_high: float, model_cutoff: float, tenant_on: bool | None, tenant_cutoff: float | None,
    given_threshold: float | None = None,
) -> Gate | None:
    """The gate of a tenant (None: the verifier is off for it). ``given_threshold``: the threshold when the
    request or the tenant sets one (None: the server's default applies)."""
    if tenant_on is False:
        return None
    cutoff = model_cutoff if tenant_cutoff is None else tenant_cutoff
    return Gate(band_low if given_threshold is None else given_threshold, band_high, cutoff)


def check_cutoff(value: float | None) -> None:
    if value is not None and (value != value or not 0.0 <= value <= 1.0):
        raise InvalidArgument(f"verifier_cutoff {value} is out of range: it must be in [0, 1]")
