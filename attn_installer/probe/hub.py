"""Whether this node reaches the Hugging Face Hub: asked only where it matters (transformers >= 5
and `kernels` installed, so `attn_implementation: flash_attention_2` can fall back to a hub kernel
fetched at model load). One HEAD request with a timeout; HF_HUB_OFFLINE is an answer of its own."""

from __future__ import annotations

from typing import Callable, Mapping, Optional

from packaging.version import InvalidVersion, Version

from attn_installer.facts import HubReach

__all__ = ["hub_matters", "probe_hub", "reach_from"]

DEFAULT_ENDPOINT = "https://huggingface.co"
TIMEOUT = 3.0

Head = Callable[[str, float], Optional[int]]
"""url, timeout -> HTTP status, or None when nothing answered."""


def hub_matters(packages: Mapping[str, str]) -> bool:
    try:
        new_transformers = Version(packages.get("transformers", "0")) >= Version("5")
    except InvalidVersion:
        new_transformers = False
    return new_transformers and "kernels" in packages


def reach_from(endpoint: str, env: Mapping[str, str], status: Optional[int], error: str = "") -> HubReach:
    """Pure: the answer (or its absence) to one HEAD of the endpoint."""
    if env.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return HubReach(endpoint, False, "HF_HUB_OFFLINE is set")
    if status is None:
        return HubReach(endpoint, False, f"no answer within {TIMEOUT:g} s" + (f" ({error})" if error else ""))
    return HubReach(endpoint, True, f"HTTP {status}")


def _head(url: str, timeout: float) -> Optional[int]:
    import requests  # noqa: PLC0415 - only when it matters

    try:
        return requests.head(url, timeout=timeout, allow_redirects=False).status_code
    except requests.RequestException:
        return None


def probe_hub(env: Mapping[str, str], packages: Mapping[str, str], head: Head = _head) -> Optional[HubReach]:
    if not hub_matters(packages):
        return None
    endpoint = env.get("HF_ENDPOINT") or DEFAULT_ENDPOINT
    if env.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return reach_from(endpoint, env, None)
    return reach_from(endpoint, env, head(endpoint.rstrip("/") + "/api/whoami-v2", TIMEOUT))
