"""A model's attention shape, from a Hugging Face ``config.json`` on disk (no network), or from an
axolotl config that names the model (its ``base_model_config`` / ``base_model``: a local folder, or
the Hugging Face cache).

Used for the bench shape and for what `verify` checks (head dims, KV heads, dtype).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

from attn_installer.errors import UsageError
from attn_installer.files import ReadProblem, loads_json_strict, read_bounded

__all__ = ["SEQ_CAP", "ModelAttention", "Shape", "attention_from_config", "axolotl_model", "find_hf_config",
           "parse_model_config", "read_json_config", "read_model_attention", "shape_from_model_config"]

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


MAX_FIELD = 1 << 24
"""No attention shape has a head count, head dim or hidden size above this."""
MAX_CONFIG_BYTES = 16 << 20
"""A config.json (id2label maps included) or an axolotl YAML is far below this."""


def _short(v: Any) -> str:
    text = repr(v) if not isinstance(v, int) or v.bit_length() < 128 else f"an integer of {v.bit_length()} bits"
    return text if len(text) <= 40 else text[:37] + "..."


def _field_int(data: Mapping[str, Any], name: str, where: str) -> Optional[int]:
    v = data.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise UsageError(f"{where}: field '{name}': {_short(v)} is not a positive integer")
    if v > MAX_FIELD:
        raise UsageError(f"{where}: field '{name}': {_short(v)} is out of range (at most {MAX_FIELD})")
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


def read_json_config(path: Path) -> Any:
    """A config.json's content (a regular file of at most 16 MB, UTF-8, strict JSON, nesting
    bounded); one-line UsageError when it cannot be read or parsed."""
    try:
        return loads_json_strict(read_bounded(Path(path), limit=MAX_CONFIG_BYTES))
    except ReadProblem as e:
        raise UsageError(f"{path}: cannot read the model config: {e}") from None


def shape_from_model_config(path: Path) -> dict[str, Any]:
    """Read and parse a config.json on disk (no network); one-line UsageError when it is bad."""
    return parse_model_config(read_json_config(path), str(path))


# --------------------------------------------------------------------------- what verify checks

_DTYPES = {"bfloat16": "bf16", "bf16": "bf16", "float16": "fp16", "fp16": "fp16", "half": "fp16"}


@dataclass(frozen=True)
class ModelAttention:
    """The attention a model trains with: what `attn-install verify` checks."""

    heads: int
    kv_heads: int
    head_dim: int
    """Of Q and K."""
    head_dim_v: int
    """Of V (differs for MLA: DeepSeek's (192, 128))."""
    dtype: Optional[str] = None
    """bf16 / fp16 from the config's torch_dtype (``dtype`` in transformers 5), None when neither."""
    source: str = ""
    sliding_window: Optional[int] = None
    """The window of its sliding-window layers, None when it has none (see :func:`_sliding_window`)."""
    softcap: Optional[float] = None
    """``attn_logit_softcapping`` (Gemma 2: 50.0): attention logits are soft-capped, None when not."""
    model_type: str = ""
    max_positions: Optional[int] = None
    """``max_position_embeddings``, uncapped."""

    @property
    def dims(self) -> str:
        return str(self.head_dim) if self.head_dim == self.head_dim_v else f"{self.head_dim}/{self.head_dim_v}"

    @property
    def label(self) -> str:
        return f"{self.heads} heads, {self.kv_heads} KV heads, head dim {self.dims}" + (
            f", {self.dtype}" if self.dtype else "")

    @property
    def features(self) -> str:
        """What the attention needs besides its shape: sliding window, soft-capping ('' for neither)."""
        out = []
        if self.sliding_window is not None:
            out.append(f"sliding window {self.sliding_window}")
        if self.softcap is not None:
            out.append(f"attention logit soft-capping {self.softcap:g}")
        return ", ".join(out)

    @property
    def name(self) -> str:
        """How reasons name the model: its type and where its config came from."""
        return f"{self.model_type or 'the model'} ({self.source})" if self.source else (self.model_type or "the model")


def attention_from_config(data: Any, where: str) -> ModelAttention:
    """The attention of a Hugging Face config.json: ``text_config`` for multimodal ones; MLA
    (``qk_nope_head_dim`` + ``qk_rope_head_dim``, ``v_head_dim``) before an explicit ``head_dim``
    (transformers sets DeepSeek's head_dim to the rope part alone), then hidden_size / heads."""
    dtype = None
    if isinstance(data, dict):
        dtype = _DTYPES.get(str(data.get("torch_dtype") or data.get("dtype") or "").lower())
    shape = parse_model_config(data, where)
    cfg = data if "num_attention_heads" in data else data["text_config"]
    inner = _DTYPES.get(str(cfg.get("torch_dtype") or cfg.get("dtype") or "").lower())
    nope, rope = _field_int(cfg, "qk_nope_head_dim", where), _field_int(cfg, "qk_rope_head_dim", where)
    d = dv = shape["head_dim"]
    if nope is not None and rope is not None:
        d = nope + rope
        dv = _field_int(cfg, "v_head_dim", where) or d
    softcap = cfg.get("attn_logit_softcapping")
    if softcap is not None and (isinstance(softcap, bool) or not isinstance(softcap, (int, float)) or softcap <= 0):
        raise UsageError(f"{where}: field 'attn_logit_softcapping': {softcap!r} is not a positive number")
    return ModelAttention(heads=shape["heads"], kv_heads=shape["kv_heads"], head_dim=d, head_dim_v=dv,
                          dtype=dtype or inner, source=where, sliding_window=_sliding_window(cfg, where),
                          softcap=float(softcap) if softcap is not None else None,
                          model_type=str(cfg.get("model_type") or data.get("model_type") or ""),
                          max_positions=_field_int(cfg, "max_position_embeddings", where))


def _sliding_window(cfg: Mapping[str, Any], where: str) -> Optional[int]:
    """The sliding window the model attends with, None when it has none: ``layer_types`` naming
    sliding_attention layers, or ``sliding_window`` set, not switched off by ``use_sliding_window:
    false`` (Qwen2 / 2.5 ship a window they do not use) and shorter than ``max_position_embeddings``
    (Phi-3.5's 262144 over 131072 positions is no window). transformers 5.20.1 configuration_*.py."""
    window = _field_int(cfg, "sliding_window", where)
    types = cfg.get("layer_types")
    if isinstance(types, list) and "sliding_attention" in types:
        return window
    if window is None or cfg.get("use_sliding_window") is False:
        return None
    mpe = _field_int(cfg, "max_position_embeddings", where)
    return window if mpe is None or window < mpe else None


def read_model_attention(path: Path) -> ModelAttention:
    return attention_from_config(read_json_config(path), str(path))


def find_hf_config(repo: str, env: Mapping[str, str], revision: Optional[str] = None) -> Optional[Path]:
    """``config.json`` of a Hugging Face model id in the local cache, as huggingface_hub lays it out
    (no network): HF_HUB_CACHE, else HUGGINGFACE_HUB_CACHE, else $HF_HOME/hub (HF_HOME defaults to
    $XDG_CACHE_HOME/huggingface, then ~/.cache/huggingface); models--{org}--{name}/refs/{revision}
    holds the commit, snapshots/{commit}/config.json the file. None when it is not there (another
    cached revision is never guessed)."""
    import os  # noqa: PLC0415 - expandvars

    def expand(p: str) -> Path:
        return Path(os.path.expandvars(os.path.expanduser(p)))

    if env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE"):
        root = expand(env.get("HF_HUB_CACHE") or env["HUGGINGFACE_HUB_CACHE"])
    else:
        home = env.get("HF_HOME") or str(Path(env.get("XDG_CACHE_HOME") or (env.get("HOME", "~") + "/.cache"))
                                         / "huggingface")
        root = expand(home) / "hub"
    folder = root / ("models--" + "--".join(repo.strip("/").split("/")))
    rev = revision or "main"
    commit = rev
    if not (len(rev) == 40 and all(ch in "0123456789abcdef" for ch in rev)):
        try:
            commit = (folder / "refs" / rev).read_text(encoding="utf-8").strip()
        except OSError:
            return None
    path = folder / "snapshots" / commit / "config.json"
    return path if path.is_file() else None


def axolotl_model(path: Path, env: Mapping[str, str]) -> tuple[Optional[ModelAttention], Optional[str], str]:
    """From an axolotl config: the model's attention (its config.json: ``base_model_config`` or
    ``base_model`` as a local folder, else from the Hugging Face cache at ``revision_of_model``), the
    dtype it trains in (``bf16: true / auto`` -> bf16, ``fp16: true`` -> fp16) and a note when the
    model's config.json is not on this machine. ConfigError when the file cannot be read
    (attn_installer.trainconfig reads it)."""
    from attn_installer.matrix import load_matrix  # noqa: PLC0415
    from attn_installer.trainconfig import find_model, read_training_config  # noqa: PLC0415

    tc = read_training_config(path, load_matrix())
    model, note = find_model(tc, env)
    return model, tc.dtype, note
