"""The verifier's network: the base's BertModel (or XLM-R, MPNet) with one linear head over the mean-pooled tokens of
``[CLS] a [SEP] b [SEP]``, giving one logit.

The runtime builds it here to export ONNX once (model.py); the trainer (the ``modelcache_train`` package beside
the service) builds the same class to train it. Same tensor names as the base, so an overlay holds only what
training changed.
"""

from __future__ import annotations

import inspect
import shutil
from pathlib import Path
from typing import Any

HEAD_WEIGHT = "verifier_head.weight"
HEAD_BIAS = "verifier_head.bias"
# Files of a trained folder that are not the base's (never copied from the base into a new trained folder).
OWN_FILES = ("model.safetensors", "modelcache_train.json", "modelcache.json", "verifier.json", "checkpoint.pt")


def build_model(torch: Any, source: Path, *, eager: bool = False) -> Any:
    """The base's encoder with the verifier head; the head is read from the folder when it has one."""
    from transformers import AutoModel

    class CrossEncoder(torch.nn.Module):  # type: ignore[misc, name-defined]
        def __init__(self, bert: Any) -> None:
            super().__init__()
            self.bert = bert
            self.head = torch.nn.Linear(bert.config.hidden_size, 1)
            # MPNet has no segment types: its forward takes no token_type_ids (the feed's zeros go unused)
            self.takes_types = "token_type_ids" in inspect.signature(bert.forward).parameters

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            types = {"token_type_ids": token_type_ids} if self.takes_types else {}
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask, **types).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            return self.head(pooled).squeeze(-1)

    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the head's tensors are "unexpected" to BertModel: they are ours
    try:
        extra = {"attn_implementation": "eager"} if eager else {}
        bert = AutoModel.from_pretrained(str(source), add_pooling_layer=False, **extra)
    finally:
        hf_logging.set_verbosity(verbosity)
    model = CrossEncoder(bert)
    weights = source / "model.safetensors"
    if weights.is_file():
        from safetensors.torch import load_file

        tensors = load_file(str(weights))
        if HEAD_WEIGHT in tensors:
            with torch.no_grad():
                model.head.weight.copy_(tensors[HEAD_WEIGHT].float())
                model.head.bias.copy_(tensors[HEAD_BIAS].float())
    return model


def save_model(model: Any, source: Path, out: Path) -> None:
    """The base folder's files with the trained weights: the encoder's tensors under the base's own names and
    the head's, so overlay.pack keeps only what changed."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        if item.is_file() and item.suffix not in (".onnx", ".bin") and item.name not in OWN_FILES:
            shutil.copyfile(item, out / item.name)
    tensors = {k: v.detach().contiguous() for k, v in model.bert.state_dict().items()}
    tensors[HEAD_WEIGHT] = model.head.weight.detach().contiguous()
    tensors[HEAD_BIAS] = model.head.bias.detach().contiguous()
    partial = out / "model.safetensors.tmp"
    save_file(tensors, str(partial), metadata={"format": "pt"})
    partial.replace(out / "model.safetensors")
