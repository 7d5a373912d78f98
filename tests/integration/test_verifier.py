"""The verifier through a real server: a cross-encoder over the candidates whose similarity is uncertain.

The pairs below were written for this test and chosen by reading the packaged verifier's scores (not from
any training or eval file): a near miss the cosine alone serves (0.86 on the tests' all-MiniLM-L6-v2:
"electrical engineers" / "civil engineers", probability 0.22) and the verifier refuses, and a paraphrase
in the band (0.87, probability 0.73) that it accepts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from modelcache_svc import errors
from tests.servers import ThreadServer

MODEL = "gpt-4o"
NEAR_MISS = ("What are the job prospects of electrical engineers in Pune?",
             "What are the job prospects of civil engineers in Pune?")
PARAPHRASE = ("How can I lose weight fast?", "What is the fastest way to lose weight?")


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def sample(server: ThreadServer, name: str, **labels: str) -> float:
    value = server.core.metrics.registry.get_sample_value(name, labels)
    return float(value or 0.0)


def test_the_verifier_refuses_a_near_miss_the_cosine_serves(make_server: Callable[..., ThreadServer]) -> None:
    server = make_server()
    with server.client() as c:
        c.create_tenant("plain", verifier=False)
        for tenant in ("default", "plain"):
            c.insert(tenant, MODEL, user(NEAR_MISS[0]), "Good: the city has many electronics firms.")
        rejected = sample(server, "modelcache_verifier_decisions_total", outcome="rejected")
        assert not c.query("default", MODEL, user(NEAR_MISS[1])).hit
        assert sample(server, "modelcache_verifier_decisions_total", outcome="rejected") == rejected + 1
        # Without the verifier the cosine alone serves the wrong answer: the test above can fail.
        plain = c.query("plain", MODEL, user(NEAR_MISS[1]))
        assert plain.hit and plain.similarity >= 0.8
        assert sample(server, "modelcache_stage_duration_seconds_count", stage="verify") >= 1


def test_the_verifier_serves_a_paraphrase_in_its_band(make_server: Callable[..., ThreadServer]) -> None:
    server = make_server()
    with server.client() as c:
        entry = c.insert("default", MODEL, user(PARAPHRASE[0]), "Eat less, move more.")
        accepted = sample(server, "modelcache_verifier_decisions_total", outcome="accepted")
        got = c.query("default", MODEL, user(PARAPHRASE[1]))
        assert (got.hit, got.match, got.id) == (True, "semantic", entry)
        assert sample(server, "modelcache_verifier_decisions_total", outcome="accepted") == accepted + 1
        # A tenant's own cut-off: stricter than any probability, the same paraphrase misses.
        c.update_tenant("default", verifier_cutoff=0.999)
        assert c.get_tenant("default").verifier_cutoff == pytest.approx(0.999)
        assert not c.query("default", MODEL, user(PARAPHRASE[1])).hit
        # An exact repeat never asks the verifier.
        assert c.query("default", MODEL, user(PARAPHRASE[0])).match == "exact"


def test_tenant_verifier_settings_round_trip_and_validation(make_server: Callable[..., ThreadServer]) -> None:
    server = make_server()
    with server.client() as c:
        t = c.create_tenant("v", verifier=False, verifier_cutoff=0.3)
        assert (t.verifier, t.verifier_cutoff) == (False, pytest.approx(0.3))
        t = c.update_tenant("v", verifier=True)
        assert (t.verifier, t.verifier_cutoff) == (True, pytest.approx(0.3))
        assert c.get_tenant("default").verifier is None  # unset: the server's setting
        for bad in (1.5, -0.2, float("nan")):
            with pytest.raises(errors.InvalidArgument, match="verifier_cutoff"):
                c.update_tenant("v", verifier_cutoff=bad)


def test_a_server_without_verifier_decides_by_the_cosine(make_server: Callable[..., ThreadServer]) -> None:
    server = make_server(verifier="off", verifier_cjk="off")
    with server.client() as c:
        c.insert("default", MODEL, user(NEAR_MISS[0]), "banana")
        assert c.query("default", MODEL, user(NEAR_MISS[1])).hit
    assert not server.core.verifiers.enabled


def test_the_onnx_export_gives_the_trained_models_logits() -> None:
    """The plain ONNX export against the torch model it came from; the served int8 graph close to both."""
    import onnxruntime as ort
    import torch
    from transformers import AutoTokenizer

    from modelcache_svc.verifier.cross_encoder import build_model
    from modelcache_svc.verifier import load_verifier

    from modelcache_svc.verifier.model import resolve_verifier

    verifier = load_verifier("packaged:verifier-en")
    source = Path(verifier.path).parent
    _, folder = resolve_verifier("packaged:verifier-en")
    firsts = [NEAR_MISS[1], PARAPHRASE[1], "What's the capital of Vietnam?"]
    seconds = [NEAR_MISS[0], PARAPHRASE[0], "capital city of Vietnam?"]
    model = build_model(torch, folder).eval()
    tokens = AutoTokenizer.from_pretrained(str(folder))(firsts, seconds, padding=True, return_tensors="pt")
    with torch.no_grad():
        want = model(tokens["input_ids"], tokens["attention_mask"], tokens["token_type_ids"]).numpy()
    feed = verifier._feed(firsts, seconds)  # the served tokenizer: the same ids as transformers'
    assert np.array_equal(feed["input_ids"], tokens["input_ids"].numpy())
    plain = ort.InferenceSession(str(source / "verifier.onnx"), providers=["CPUExecutionProvider"])
    assert np.allclose(plain.run(None, feed)[0], want, atol=1e-3)
    assert np.allclose(np.array(verifier.logits(firsts, seconds)), want, atol=1.0)


def test_an_mpnet_verifier_exports_and_serves_its_logits(tmp_path: Path) -> None:
    """A verifier on an MPNet base (all-mpnet-base-v2's tokenizer, a small random network of its shape): MPNet
    takes no segment types, so its graph has no token_type_ids input and the served feed leaves them out; the
    ids are transformers' and the logits the torch model's."""
    import shutil

    import onnxruntime as ort
    import torch
    from transformers import AutoTokenizer, MPNetConfig, MPNetModel

    from modelcache_svc.embedding.models import resolve_model
    from modelcache_svc.verifier.cross_encoder import build_model, save_model
    from modelcache_svc.verifier.model import Verifier

    _, base = resolve_model("packaged:all-mpnet-base-v2")
    small = tmp_path / "small-mpnet"
    torch.manual_seed(0)
    MPNetModel(MPNetConfig(vocab_size=30527, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=64)).save_pretrained(str(small))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copyfile(Path(base) / name, small / name)
    model = build_model(torch, small).eval()
    assert not model.takes_types
    trained = tmp_path / "verifier-mpnet"
    save_model(model, small, trained)

    verifier = Verifier("verifier-mpnet", trained, tmp_path / "cache")
    firsts = [NEAR_MISS[1], PARAPHRASE[1], "What's the capital of Vietnam?"]
    seconds = [NEAR_MISS[0], PARAPHRASE[0], "capital city of Vietnam?"]
    tokens = AutoTokenizer.from_pretrained(str(trained))(firsts, seconds, padding=True, return_tensors="pt")
    with torch.no_grad():
        want = build_model(torch, trained).eval()(tokens["input_ids"], tokens["attention_mask"], None).numpy()
    feed = verifier._feed(firsts, seconds)
    assert set(feed) == {"input_ids", "attention_mask"}
    assert np.array_equal(feed["input_ids"], tokens["input_ids"].numpy())
    plain = ort.InferenceSession(str(verifier.path.parent / "verifier.onnx"), providers=["CPUExecutionProvider"])
    assert np.allclose(plain.run(None, feed)[0], want, atol=1e-4)
    assert np.allclose(np.array(verifier.logits(firsts, seconds)), want, atol=0.1)
