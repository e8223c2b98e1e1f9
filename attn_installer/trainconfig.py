"""The user's axolotl training config, read for the plan: the workload (``adapter``), packing
(``sample_packing``), the model (``base_model_config`` / ``base_model`` and ``revision_of_model``,
its config.json from a local folder or the Hugging Face cache, never the network), ``sequence_len``,
the precision keys and the attention it selects (``attn_implementation`` or a legacy boolean).

Reads are bounded (a regular file of at most 1 MB, UTF-8); every problem is one ConfigError line
naming the file (and line / field) and nothing is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Optional

from attn_installer.errors import ConfigError
from attn_installer.files import ReadProblem, check_yaml_nesting, read_bounded
from attn_installer.matrix import Matrix
from attn_installer.modelconfig import ModelAttention, find_hf_config, read_model_attention
from attn_installer.request import DEFAULT_SWITCH_MARGIN, Training
from attn_installer.words import Workload

__all__ = ["MAX_BYTES", "TrainingConfig", "find_model", "read_training_config", "training_from_text"]

MAX_BYTES = 1 << 20
LORA_ADAPTERS = ("lora", "qlora")
"""``adapter`` values that train adapters (axolotl utils/schemas/peft.py); anything else is full."""


@dataclass(frozen=True)
class TrainingConfig:
    path: str
    data: Mapping[str, Any] = field(default_factory=dict)
    """The top-level keys as YAML gives them."""
    workload: Workload = "full"
    adapter: Optional[str] = None
    packing: bool = False
    sequence_len: Optional[int] = None
    base_model: Optional[str] = None
    """``base_model_config`` or ``base_model``: where the model's config.json is looked for."""
    revision: Optional[str] = None
    choice: Optional[str] = None
    """The attention value it selects (attn_implementation, or what its legacy boolean means)."""
    choice_from: str = ""
    legacy: bool = False
    """The choice comes from a legacy boolean (flash_attention: true, ...), not attn_implementation."""
    warnings: tuple[str, ...] = ()

    def value(self, key: str) -> Any:
        return self.data.get(key)

    def as_training(self, model: Optional[ModelAttention], *, allow_no_packing: bool = False,
                    prefer_recommended: bool = False, margin: float = DEFAULT_SWITCH_MARGIN) -> Training:
        """What this config asks of the plan (the model found for it passed in)."""
        return Training(source=self.path, packing=self.packing, allow_no_packing=allow_no_packing, model=model,
                        sequence_len=self.sequence_len, choice=self.choice, choice_from=self.choice_from,
                        prefer_recommended=prefer_recommended, margin=margin)

    @property
    def dtype(self) -> Optional[str]:
        """bf16 / fp16 when the file says which (bf16: true / auto, fp16: true)."""
        if self.data.get("bf16") in (True, "auto"):
            return "bf16"
        if self.data.get("fp16") is True:
            return "fp16"
        return None


def _load(text: str, name: str) -> Any:
    from ruamel.yaml import YAML  # noqa: PLC0415 - keep `attn-install --help` fast
    from ruamel.yaml.error import YAMLError  # noqa: PLC0415

    from attn_installer.config import yaml_error  # noqa: PLC0415

    try:
        check_yaml_nesting(text)
    except ReadProblem as e:
        raise ConfigError(f"{name}: {e}") from None
    try:
        return YAML(typ="safe", pure=True).load(text)
    except YAMLError as e:
        raise yaml_error(name, e, "not valid YAML: ", "; the file was not changed") from None
    except RecursionError:
        raise ConfigError(f"{name}: nests too deeply to read") from None
    except (ValueError, OverflowError) as e:  # an integer of more digits than Python converts
        raise ConfigError(f"{name}: holds a value that cannot be read ({str(e).split(';')[0]})") from None


def read_training_config(path: Path, matrix: Matrix) -> TrainingConfig:
    """Read an axolotl config (bounded) for the plan; ConfigError naming the file when it cannot be."""
    try:
        text = read_bounded(Path(path), limit=MAX_BYTES)
    except ReadProblem as e:
        raise ConfigError(f"{path}: cannot read the axolotl config: {e}") from None
    return training_from_text(text, str(path), matrix)


def _flag(data: Mapping[str, Any], key: str, name: str) -> bool:
    v = data.get(key)
    if v is None or isinstance(v, bool):
        return bool(v)
    raise ConfigError(f"{name}: field '{key}': {v!r} is not true or false")


def training_from_text(text: str, name: str, matrix: Matrix) -> TrainingConfig:
    data = _load(text, name)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{name}: the top level is not a mapping of axolotl keys")
    adapter = data.get("adapter")
    if adapter is not None and not isinstance(adapter, str):
        raise ConfigError(f"{name}: field 'adapter': {adapter!r} is not a name (lora, qlora, ...)")
    seq = data.get("sequence_len")
    if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int) or seq <= 0):
        raise ConfigError(f"{name}: field 'sequence_len': {seq!r} is not a positive integer")
    model = data.get("base_model_config") or data.get("base_model")
    if model is not None and not isinstance(model, str):
        raise ConfigError(f"{name}: field 'base_model': {model!r} is not a model id or folder")
    rev = data.get("revision_of_model")
    choice, said, legacy, warnings = _attention(data, name, matrix)
    return TrainingConfig(path=name, data=data, workload="lora" if adapter in LORA_ADAPTERS else "full",
                          adapter=adapter, packing=_flag(data, "sample_packing", name),
                          sequence_len=seq, base_model=model or None, revision=str(rev) if rev else None,
                          choice=choice, choice_from=said, legacy=legacy, warnings=tuple(warnings))


def _attention(data: Mapping[str, Any], name: str, matrix: Matrix) -> tuple[Optional[str], str, bool, list[str]]:
    """What the file selects: attn_implementation, else the legacy boolean that axolotl >= 0.17
    would map (matrices/axolotl.toml legacy_priority); warnings for combinations axolotl refuses."""
    warnings: list[str] = []
    flags = {f.flag: f.attn_implementation for f in matrix.legacy_flags}
    on = [k for k in flags if data.get(k) is True]
    for k in flags:
        if data.get(k) is not None and not isinstance(data.get(k), bool):
            raise ConfigError(f"{name}: field '{k}': {data[k]!r} is not true or false")
    order = list(matrix.axolotl_keys.legacy_priority) + [k for k in flags if k not in
                                                          matrix.axolotl_keys.legacy_priority]
    on.sort(key=order.index)
    impl = data.get("attn_implementation")
    if impl is not None and not isinstance(impl, str):
        raise ConfigError(f"{name}: field 'attn_implementation': {impl!r} is not a name")
    if impl:
        if on:
            warnings.append(f"{name} sets attn_implementation: {impl} and {', '.join(f'{k}: true' for k in on)}; "
                            "axolotl >= 0.17 refuses that combination (attn_implementation is what counts here)")
        return impl, f"attn_implementation: {impl}", False, warnings
    if not on:
        return None, "", False, warnings
    if len(on) > 1:
        warnings.append(f"{name} sets {', '.join(f'{k}: true' for k in on)}; axolotl < 0.17 refuses more than one "
                        f"('Only one of ... must be set'), >= 0.17 takes {on[0]} "
                        "(matrices/axolotl.toml legacy_priority)")
    return flags[on[0]], f"{on[0]}: true", True, warnings


def find_model(tc: TrainingConfig, env: Mapping[str, str], model_config: Optional[Path] = None
               ) -> tuple[Optional[ModelAttention], str]:
    """The model's attention: --model-config when given, else the config.json of the training's
    ``base_model`` (a local folder, or the Hugging Face cache at ``revision_of_model``; never the
    network). (None, why) when it is not on this machine."""
    if model_config is not None:
        return read_model_attention(model_config), ""
    name = tc.base_model
    if not name:
        return None, f"{tc.path} names no base_model"
    local = Path(name).expanduser()
    if local.is_dir():
        cfg: Optional[Path] = local / "config.json" if (local / "config.json").is_file() else None
    else:
        cfg = find_hf_config(name, env, tc.revision)
    if cfg is None:
        return None, (f"config.json of {name} is not on this machine (local folder or Hugging Face cache; "
                      "--model-config FILE gives it)")
    return replace(read_model_attention(cfg), source=name), ""
