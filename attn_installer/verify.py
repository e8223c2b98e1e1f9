"""Prove a backend works with real kernel calls, in a fresh interpreter, against fp32 attention.

The check is target/attn_verify.py, run as ``python -I`` from an empty temporary directory (a source
checkout in the working directory cannot shadow the installed package) with a timeout; it prints
one JSON line that :func:`parse_verify_output` reads. How the backend is called comes from its
``call`` entry in matrices/backends.toml; which shapes are checked is :func:`cases`: what training
runs (GQA, MQA, causal and not, packed documents through the varlen entry point, the model's head
dims and dtype), each with its backward. No GPU: "skipped".

A verdict is recorded per installed build (the digest of its files, target/attn_builds.py) and GPU
model in the cache (``verify/``): `plan --measured` ranks a measured backend only when the build
installed now passed on the GPU it was measured on (bench.untrusted).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

from attn_installer import target
from attn_installer.facts import Gpu
from attn_installer.matrix.model import Backend, Matrix
from attn_installer.runner import Runner

if TYPE_CHECKING:
    from attn_installer.modelconfig import ModelAttention

__all__ = ["DEFAULT_HEAD_DIMS", "VerifyResult", "attention_kernel", "case_lines", "cases", "load_record",
           "parse_verify_output", "per_gpu_model", "record_path", "record_status", "save_record", "verify_backend"]

VERIFY_TIMEOUT = 600.0
DEFAULT_HEAD_DIMS = (64, 128)
"""Without a model config: the head dims most models train with."""
CASE_SEQ = 256
CASE_DOCS = (37, 91, 128)
"""Packed cases: three documents of unequal lengths (one odd) in each row of CASE_SEQ tokens."""


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


def _case(kind: str, d: int, dv: int, heads: int, kv: int, causal: bool = True,
          docs: Optional[tuple[int, ...]] = None, batch: int = 2) -> dict[str, Any]:
    tag = f"d{d}" if d == dv else f"d{d}/{dv}"
    c: dict[str, Any] = {"name": f"{kind} {'causal' if causal else 'non-causal'} h{heads}/kv{kv} {tag}",
                         "batch": batch, "seq": CASE_SEQ, "heads": heads, "kv_heads": kv, "head_dim": d,
                         "causal": causal, "backward": True}
    if dv != d:
        c["head_dim_v"] = dv
    if docs:
        c["docs"] = list(docs)
    return c


def cases(b: Backend, head_dims: Sequence[int] = DEFAULT_HEAD_DIMS, model: Optional[ModelAttention] = None
          ) -> list[dict[str, Any]]:
    """The shapes verification runs, each forward and backward (a forward-only backend, Sage, skips
    its backward): per head dim, MHA, GQA (8 query heads on 2 KV heads) and MQA (on 1) causal,
    GQA non-causal, and for a backend with a packing path the varlen entry point over documents of
    unequal lengths (cu_seqlens), GQA and MHA. With a *model*, its own head dims (Q/K and V) and its
    own head counts as one more case."""
    dims = [(model.head_dim, model.head_dim_v)] if model is not None else [(d, d) for d in head_dims]
    packed = bool(b.call.varlen) and b.packing
    out: list[dict[str, Any]] = []
    for d, dv in dims:
        out += [_case("mha", d, dv, 8, 8), _case("gqa", d, dv, 8, 2), _case("mqa", d, dv, 8, 1),
                _case("gqa", d, dv, 8, 2, causal=False)]
        if model is not None and (model.heads, model.kv_heads) not in ((8, 8), (8, 2), (8, 1)):
            out.append(_case("model", d, dv, model.heads, model.kv_heads, batch=1))
        if packed:
            out += [_case("varlen gqa", d, dv, 8, 2, docs=CASE_DOCS), _case("varlen mha", d, dv, 8, 8, docs=CASE_DOCS)]
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


def verify_backend(runner: Runner, python: str, b: Backend, *, dtype: str = "bf16",
                   head_dims: Sequence[int] = DEFAULT_HEAD_DIMS, model: Optional[ModelAttention] = None,
                   timeout: float = VERIFY_TIMEOUT, env: Optional[Mapping[str, str]] = None,
                   hub: Optional[str] = None, math_only: bool = False) -> VerifyResult:
    """Run the check in a fresh ``python -I`` from an empty temporary directory; every case passes
    within the backend's tolerance (its matrix row: relative error and cosine of the output, twice
    that relative error for dq, dk, dv). ``hub``: the backend is the Hub kernel ``repo@revision``,
    loaded with the `kernels` package instead of its module. ``math_only``: torch has no fused SDPA
    kernel for these GPUs (matrices/gpus.toml), so the math kernel running is right, not a fallback."""
    from attn_installer.builds import build_distributions  # noqa: PLC0415

    call = call_table(b)
    if hub is not None:
        call = {**call, "module": f"hub:{hub}"}
    if math_only and call.get("require_fused"):
        call = {**call, "require_fused": False}
    config = {"backend": b.name, "call": call, "dtype": dtype, "cases": cases(b, head_dims, model),
              "rel_tol": b.verify_rel_tol, "min_cosine": b.verify_min_cosine,
              "build_dists": [] if hub is not None else list(build_distributions(b))}
    with tempfile.TemporaryDirectory(prefix="attn-install-verify-") as tmp:
        done = runner.run(target.argv(python, "attn_verify", json.dumps(config)), timeout=timeout, env=env,
                          cwd=Path(tmp))
    return parse_verify_output(b.name, done.stdout, done.stderr, done.returncode, done.timed_out)


def _g(v: Any) -> str:
    return f"{v:.1e}" if isinstance(v, (int, float)) else "-"


_ATTENTION_WORDS = ("attn", "attention", "fmha", "flash", "sdpa", "softmax")


def attention_kernel(kernels: list[Any]) -> Optional[str]:
    """The kernel a case names, from the kernels it ran (longest-running first): the first whose
    name says attention (FA's ``FlashAttnFwdSm90``, cuDNN's ``..._sdpa_..._flash_fprop``, Sage's
    ``qk_int8_sv_f8_attn_kernel``, Triton's ``_attn_fwd``), else the first outside torch's own helper
    kernels (``at::native::`` reductions, copies: SageAttention's mean of K and its V transpose run
    longer than its attention kernel at these small shapes), else the first."""
    names = [str(k) for k in kernels]
    said = next((k for k in names if any(w in k.lower() for w in _ATTENTION_WORDS)), None)
    return said or next((k for k in names if "at::native::" not in k), names[0] if names else None)


def case_lines(res: VerifyResult) -> list[str]:
    """One line per case: its verdict, the errors of the output and of dq, dk, dv, the kernel that ran."""
    out = []
    cases_seen = res.data.get("cases")
    for c in cases_seen if isinstance(cases_seen, list) else ():
        if not isinstance(c, dict):
            continue
        ok = c.get("status") == "passed"
        text = f"  {'ok  ' if ok else 'FAIL'} {c.get('name', '?')}:"
        if "out_rel_err" in c:
            text += f" out rel err {_g(c.get('out_rel_err'))} cos {c.get('out_cosine', 0):.5f}"
            grads = [f"{g} {_g(c.get(f'{g}_rel_err'))}" for g in ("dq", "dk", "dv") if f"{g}_rel_err" in c]
            if grads:
                text += "; " + " ".join(grads)
        if c.get("error"):
            text += f" {c['error']}"
        elif not ok and c.get("wrong"):
            text += f" ({c['wrong']} wrong)"
        ran = c.get("kernel") or attention_kernel(c.get("kernels") or [])
        if ran:
            text += f"; kernel {str(ran)[:70]}"
        out.append(text)
    return out


# --------------------------------------------------------------------------- every GPU model


def math_only(gpus: Sequence[Gpu], matrix: Matrix) -> bool:
    """Whether torch runs only its math SDPA kernel on every one of *gpus* (matrices/gpus.toml)."""
    from attn_installer.resolve import sdpa_kernel  # noqa: PLC0415

    return bool(gpus) and all(sdpa_kernel(g, matrix) == "math" for g in gpus)


def per_gpu_model(gpus: Sequence[Gpu], env: Mapping[str, str]) -> list[tuple[str, dict[str, str]]]:
    """Where verification runs after an install: once on one GPU of each distinct model visible
    (name and arch), each with the environment that shows the child that GPU alone (its UUID in
    CUDA_VISIBLE_DEVICES; else its index among those visible now, in PCI order as nvidia-smi
    numbers them; HIP_VISIBLE_DEVICES on AMD). One model (or none): one run, environment as it is."""
    firsts: dict[tuple[str, str], Gpu] = {}
    for g in gpus:
        firsts.setdefault((g.name, g.arch), g)
    if len(firsts) < 2:
        return [("", {})]
    out: list[tuple[str, dict[str, str]]] = []
    for (name, arch), g in firsts.items():
        var = "HIP_VISIBLE_DEVICES" if g.vendor == "amd" else "CUDA_VISIBLE_DEVICES"
        extra: dict[str, str] = {}
        if g.vendor != "amd" and g.uuid:
            extra[var] = g.uuid
        else:
            parent = [e.strip() for e in env[var].split(",")] if env.get(var) else []
            extra[var] = parent[g.index] if g.index < len(parent) else str(g.index)
            if g.vendor != "amd":
                extra["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        out.append((f"{name} ({arch})", extra))
    return out


# --------------------------------------------------------------------------- records


def record_path(cache_dir: Path, backend: str, build: str) -> Path:
    return Path(cache_dir) / "verify" / f"{backend}-{build}.json"


def load_record(cache_dir: Path, backend: str, build: str) -> dict[str, Any]:
    """The verification record of one build ({"gpus": {name: verdict}}), {} when there is none."""
    try:
        data = json.loads(record_path(cache_dir, backend, build).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) and isinstance(data.get("gpus"), dict) else {}


def save_record(cache_dir: Path, res: VerifyResult, created: str) -> Optional[Path]:
    """Record a passed or failed verdict for the build and GPU model the check saw; nothing for a
    skipped one or one without a build digest. Returns the record's path."""
    from attn_installer.files import write_atomic  # noqa: PLC0415

    build, gpu = res.data.get("build"), res.data.get("gpu")
    if res.status not in ("passed", "failed") or not isinstance(build, str) or not isinstance(gpu, str):
        return None
    path = record_path(cache_dir, res.backend, build)
    rec = load_record(cache_dir, res.backend, build) or {"schema_version": 1, "backend": res.backend, "build": build,
                                                           "gpus": {}}
    seen = res.data.get("cases")
    names = [c.get("name") for c in (seen if isinstance(seen, list) else ()) if isinstance(c, dict)]
    rec["gpus"][gpu] = {"status": res.status, "detail": res.detail, "dtype": res.data.get("dtype"),
                        "capability": res.data.get("capability"), "cases": names, "created": created}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(rec, indent=1, sort_keys=True) + "\n")
    return path


def record_status(cache_dir: Path, backend: str, build: str, gpu: str) -> Optional[str]:
    """"passed", "failed: ..." or None (never verified) for a build on a GPU model."""
    v = load_record(cache_dir, backend, build).get("gpus", {}).get(gpu)
    if not isinstance(v, dict):
        return None
    return "passed" if v.get("status") == "passed" else f"{v.get('status')}: {v.get('detail', '')}"[:200]
