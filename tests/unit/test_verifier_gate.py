"""The verifier's gate: where the cosine decides alone, where the verifier decides, and what a tenant sets."""

from __future__ import annotations

import pytest

from modelcache_svc.cache.verifier_gate import Gate, check_cutoff, gate_for, verifier_applies
from modelcache_svc.errors import InvalidArgument


def test_three_places_of_a_similarity() -> None:
    gate = Gate(low=0.70, high=0.92, cutoff=0.5)
    threshold = 0.80
    assert gate.sure(0.95, threshold) and not gate.uncertain(0.95, threshold)
    assert gate.uncertain(0.85, threshold) and not gate.sure(0.85, threshold)  # above the threshold, in the band
    assert gate.uncertain(0.72, threshold)  # below the threshold: only the verifier may serve it
    assert not gate.uncertain(0.69, threshold) and not gate.sure(0.69, threshold)
    assert gate.floor(threshold) == 0.70


def test_a_threshold_above_the_band_widens_what_the_verifier_reads() -> None:
    gate = Gate(low=0.70, high=0.92, cutoff=0.5)
    assert gate.uncertain(0.95, 0.97) and not gate.sure(0.95, 0.97)
    assert gate.sure(0.98, 0.97)
    assert gate.floor(0.60) == 0.60  # a looser threshold reads lower candidates too


def test_a_given_threshold_is_a_floor() -> None:
    gate = gate_for(0.76, 0.89, 0.5, None, None, 0.999)
    assert gate is not None and gate.floor(0.999) == 0.999
    assert not gate.uncertain(0.98, 0.999) and not gate.sure(0.98, 0.999)
    loose = gate_for(0.76, 0.89, 0.5, None, None, 0.70)
    assert loose is not None and loose.uncertain(0.72, 0.70)  # looser than the band: the verifier decides there


def test_tenant_settings() -> None:
    assert gate_for(0.7, 0.9, 0.4, False, None) is None
    assert gate_for(0.7, 0.9, 0.4, None, None) == Gate(0.7, 0.9, 0.4)
    assert gate_for(0.7, 0.9, 0.4, True, 0.8) == Gate(0.7, 0.9, 0.8)


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_cutoff_out_of_range(bad: float) -> None:
    with pytest.raises(InvalidArgument, match="verifier_cutoff"):
        check_cutoff(bad)


def test_which_tenants_the_verifier_reads() -> None:
    from modelcache_svc.records import TenantConfig

    assert verifier_applies(TenantConfig())
    assert not verifier_applies(TenantConfig(verifier=False))
    # Its band was fitted on the server's models' similarities: a tenant's own model only when it asks.
    assert not verifier_applies(TenantConfig(embedding_model="use:multilingual-v3"))
    assert verifier_applies(TenantConfig(embedding_model="use:multilingual-v3", verifier=True))
