"""A model's attention shape, from a Hugging Face ``config.json`` on disk (no network).

Used for the bench shape today; the same reader serves the plan (head dims, KV heads).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

from attn_installer.errors import UsageError

__all__ = ["SEQ_CAP", "Shape", "parse_model_config", "shape_from_model_config"]

SEQ_CAP = 4096
"""A model config's max_position_embeddings is capped here (131072 would take minutes and a
quadratic reference); pass --seq-len to measure longer."""


@dataclass(frozen=True)
class Shape:
    batch: int = 4
    seq_len: int = 4096
    heads: int = 32
    kv_heads: int = 8
    head_dim: int = 128
    source: str = "defaults"

    @property
    def label(self) -> str:
        return f"B={self.batch} S={self.seq_len} H={self.heads} KV={self.kv_heads} D={self.head_dim}"


def _field_int(data: Mapping[str, Any], name: str, where: str) -> Optional[int]:
    v = data.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise UsageError(f"{where}: field '{name}': {v!r} is not a positive integer")
    return v


def parse_model_config(data: Any, where: str) -> dict[str, Any]:
    """Attention shape from a Hugging Face ``config.json`` (``text_config`` for multimodal ones):
    head_dim (or hidden_size / num_attention_heads), heads, kv heads, and the sequence length
    (max_position_embeddings capped at SEQ_CAP). Raises UsageError naming the file and field."""
    if not isinstance(data, dict):
        raise UsageError(f"{where}: not a JSON object (expected a Hugging Face config.json)")
    if "num_attention_heads" not in data and isinstance(data.get("text_config"), dict):
        data, where = data["text_config"], f"{where}: text_config"
    heads = _field_int(data, "num_attention_heads", where)
    if heads is None:
        raise UsageError(f"{where}: field 'num_attention_heads' is missing (is this a model config.json?)")
    kv = _field_int(data, "num_key_value_heads", where) or heads
    if heads % kv:
        raise UsageError(f"{where}: field 'num_key_value_heads': {kv} does not divide num_attention_heads {heads}")
    head_dim = _field_int(data, "head_dim", where)
    if head_dim is None:
        hidden = _field_int(data, "hidden_size", where)
        if hidden is None:
            raise UsageError(f"{where}: neither 'head_dim' nor 'hidden_size' is given")
        if hidden % heads:
            raise UsageError(f"{where}: field 'hidden_size': {hidden} is not a multiple of "
                             f"num_attention_heads {heads} (and no 'head_dim' is given)")
        head_dim = hidden // heads
    out = {"heads": heads, "kv_heads": kv, "head_dim": head_dim}
    mpe = _field_int(data, "max_position_embeddings", where)
    if mpe is not None:
        out["seq_len"] = min(mpe, SEQ_CAP)
    return out


def shape_from_model_config(path: Path) -> dict[str, Any]:
    """Read and parse a config.json on disk (no network); one-line UsageError when it is bad."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise UsageError(f"{path}: cannot read the model config: {e.strerror or e}") from None
    try:
        data = json.loads(text)
    except ValueError as e:
        raise UsageError(f"{path}: not valid JSON: {e}") from None
    return parse_model_config(data, str(path))
