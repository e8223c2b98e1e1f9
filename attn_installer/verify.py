"""Prove a backend works with a real kernel call, in a fresh interpreter, against fp32 attention.

The check is target/attn_verify.py, run as ``python -I`` from an empty temporary directory (a source
checkout in the working directory cannot shadow the installed package) with a timeout; it prints
one JSON line that :func:`parse_verify_output` reads. How the backend is called comes from its
``call`` entry in matrices/backends.toml; which shapes are checked is :func:`cases`. No GPU: "skipped".
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

from attn_installer import target
from attn_installer.matrix.model import Backend
from attn_installer.runner import Runner

__all__ = ["VerifyResult", "cases", "parse_verify_output", "verify_backend"]

VERIFY_TIMEOUT = 300.0


@dataclass(frozen=True)
class VerifyResult:
    backend: str
    status: str
    """passed, failed or skipped."""
    detail: str
    data: dict[str, object]

    @property
    def ok(self) -> bool:
        return self.status in ("passed", "skipped")

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "status": self.status, "detail": self.detail, **self.data}


def cases(b: Backend, head_dim: int = 128) -> list[dict[str, Any]]:
    """The shapes verification runs: plain causal attention with its backward, and the packed
    (varlen) path axolotl calls with sample_packing where the backend's check has used it."""
    out: list[dict[str, Any]] = [{"name": "causal", "batch": 2, "seq": 512, "heads": 8, "kv_heads": 8,
                                  "head_dim": head_dim, "causal": True, "backward": True}]
    if b.call.convention == "sage" and b.call.varlen:
        out.append({"name": "varlen", "batch": 2, "seq": 512, "heads": 8, "kv_heads": 8, "head_dim": head_dim,
                    "causal": True, "backward": False, "docs": [512]})
    return out


def call_table(b: Backend) -> dict[str, Any]:
    """A backend's ``call`` entry as the target programs take it."""
    from dataclasses import asdict  # noqa: PLC0415

    d = asdict(b.call)
    d["alternatives"] = list(b.call.alternatives)
    return d


def parse_verify_output(backend: str, stdout: str, stderr: str, returncode: int,
                        timed_out: bool) -> VerifyResult:
    """The last JSON line the check printed; anything else is a failure with its last line."""
    if timed_out:
        return VerifyResult(backend, "failed", "verification timed out", {})
    for line in reversed(stdout.strip().splitlines()):
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict) and data.get("status") in ("passed", "failed", "skipped"):
            if "can't load C++/CUDA extensions" in stderr and data["status"] == "passed" \
                    and not data.get("warnings"):
                return VerifyResult(backend, "failed", "xformers: can't load C++/CUDA extensions", data)
            rest = {k: v for k, v in data.items() if k not in ("status", "detail")}
            return VerifyResult(backend, str(data["status"]), str(data.get("detail", "")), rest)
    tail = [ln for ln in (stderr or stdout).strip().splitlines() if ln.strip()]
    return VerifyResult(backend, "failed",
                        f"verification crashed (exit {returncode}): {tail[-1] if tail else 'no output'}", {})


def verify_backend(runner: Runner, python: str, b: Backend, *, dtype: str = "bf16", head_dim: int = 128,
                   timeout: float = VERIFY_TIMEOUT, env: Optional[Mapping[str, str]] = None,
                   hub: Optional[str] = None) -> VerifyResult:
    """Run the check in a fresh ``python -I`` from an empty temporary directory; the output passes
    within the backend's tolerance (its matrix row: relative error and cosine). ``hub``: the backend
    is the Hub kernel ``repo@revision``, loaded with the `kernels` package instead of its module."""
    call = call_table(b)
    if hub is not None:
        call = {**call, "module": f"hub:{hub}"}
    config = {"backend": b.name, "call": call, "dtype": dtype, "cases": cases(b, head_dim),
              "rel_tol": b.verify_rel_tol, "min_cosine": b.verify_min_cosine}
    with tempfile.TemporaryDirectory(prefix="attn-install-verify-") as tmp:
        done = runner.run(target.argv(python, "attn_verify", json.dumps(config)), timeout=timeout, env=env,
                          cwd=Path(tmp))
    return parse_verify_output(b.name, done.stdout, done.stderr, done.returncode, done.timed_out)
