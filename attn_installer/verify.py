"""Prove a backend works with a real kernel call, in a fresh interpreter, against torch's math SDPA.

The check runs as ``python -I -c SNIPPET`` from a temporary directory (a source checkout in the
working directory cannot shadow the installed package) with a timeout, and prints one JSON line.
It catches the false successes users hit: an import that works and a kernel that returns garbage
(SageAttention 2.2.0's default sm90 kernel built with CUDA 13: cosine ~ 0), xformers falling back
without its C++/CUDA extensions, and SDPA silently running its math kernel. No GPU: "skipped".
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from attn_installer.runner import Runner

__all__ = ["VerifyResult", "parse_verify_output", "verify_backend"]

VERIFY_TIMEOUT = 300.0
# bf16 / fp16 operands against an fp32 reference land between 1e-3 and 1e-2 relative error.
REL_TOL = 2e-2
MIN_COSINE = 0.999

SNIPPET = r'''
import json, sys, warnings
name, dtype_name = sys.argv[1], sys.argv[2]
head_dim, rel_tol, min_cos = int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
out = {"backend": name, "dtype": dtype_name, "head_dim": head_dim}
def done(status, detail, **kw):
    out.update(kw, status=status, detail=detail); print(json.dumps(out)); sys.exit(0)
try:
    import torch
except Exception as e:
    done("failed", f"import torch failed: {e}")
def xformers_attention_in_aten():
    """xformers >= 0.0.34 calls torch's aten efficient-attention kernels; its own extension then
    holds other ops only (xformers CHANGELOG 0.0.34/0.0.35), so a failed extension load is not by
    itself a broken attention path there. Older versions fall back or fail without it."""
    import xformers
    parts = []
    for p in xformers.__version__.split("+")[0].split(".")[:3]:
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts) >= (0, 0, 34)
IMPORTS = {"xformers": "xformers.ops", "flash_attention_2": "flash_attn", "flash_attention_2_rocm": "flash_attn",
           "flash_attention_2_rocm_triton": "flash_attn", "flash_attention_3": "flash_attn_interface",
           "flash_attention_4": "flash_attn.cute", "sage": "sageattention"}
if name in IMPORTS:
    import importlib
    try:
        with warnings.catch_warnings(record=True) as caught_import:
            warnings.simplefilter("always")
            importlib.import_module(IMPORTS[name])
    except Exception as e:
        done("failed", f"import {IMPORTS[name]} failed: " + f"{type(e).__name__}: {e}".splitlines()[0][:300])
    bad = [str(w.message) for w in caught_import if "C++/CUDA extensions" in str(w.message)]
    if bad and name == "xformers" and xformers_attention_in_aten():
        out["warnings"] = ["xformers' C++/CUDA extension did not load; since 0.0.34 its attention "
                           "runs on torch's own kernels, so the kernel check below decides"]
    elif bad:
        done("failed", "extension not loaded: " + bad[0][:200])
if not torch.cuda.is_available():
    done("skipped", "no GPU" + (f" (import {IMPORTS[name]} ok)" if name in IMPORTS else ""))
out["torch"] = torch.__version__
out["gpu"] = torch.cuda.get_device_name(0)
dt = {"bf16": torch.bfloat16, "fp16": torch.float16}[dtype_name]
torch.manual_seed(0)
B, H, S, D = 2, 8, 512, head_dim
q, k, v = (torch.randn(B, H, S, D, device="cuda", dtype=dt, requires_grad=True) for _ in range(3))
g = torch.randn(B, H, S, D, device="cuda", dtype=dt)
from torch.nn.functional import scaled_dot_product_attention as sdpa
def reference():
    from torch.nn.attention import SDPBackend, sdpa_kernel
    qf, kf, vf = (t.detach().float().requires_grad_(True) for t in (q, k, v))
    with sdpa_kernel([SDPBackend.MATH]):
        o = sdpa(qf, kf, vf, is_causal=True)
    o.backward(g.float())
    return o.detach(), [t.grad for t in (qf, kf, vf)]
REF = reference()
def compare(o, ref):
    o, ref = o.float().reshape(-1), ref.float().reshape(-1)
    if not torch.isfinite(o).all():
        return float("inf"), 0.0
    rel = ((o - ref).norm() / ref.norm()).item()
    cos = torch.nn.functional.cosine_similarity(o, ref, dim=0).item()
    return rel, cos
def check(fn, backward=True, layout="bhsd"):
    for t in (q, k, v):
        t.grad = None
    args = (q, k, v) if layout == "bhsd" else tuple(t.transpose(1, 2) for t in (q, k, v))
    o = fn(*args)
    if isinstance(o, tuple):
        o = o[0]
    if layout == "bshd":
        o = o.transpose(1, 2)
    ref_o, ref_g = REF
    rel, cos = compare(o, ref_o)
    res = {"out_rel_err": rel, "out_cosine": cos}
    ok = rel < rel_tol and cos > min_cos
    if backward and ok:
        o.backward(g)
        for tname, t, rg in zip("qkv", (q, k, v), ref_g):
            r, c = compare(t.grad, rg)
            res[f"d{tname}_rel_err"] = r
            ok = ok and r < rel_tol * 2 and c > min_cos
    torch.cuda.synchronize()
    return ok, res
try:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if name in ("sdpa", "eager"):
            from torch.nn.attention import SDPBackend, sdpa_kernel
            kernels = {}
            for kname in ("CUDNN_ATTENTION", "FLASH_ATTENTION", "EFFICIENT_ATTENTION"):
                kb = getattr(SDPBackend, kname, None)
                if kb is None:
                    continue
                try:
                    with sdpa_kernel([kb]):
                        kok, kres = check(lambda a, b, c: sdpa(a, b, c, is_causal=True))
                    kernels[kname.split("_")[0].lower()] = "ok" if kok else f"wrong output {kres}"
                except RuntimeError as e:
                    kernels[kname.split("_")[0].lower()] = f"unavailable: {str(e).splitlines()[0][:120]}"
            out["sdpa_kernels"] = kernels
            ok, res = check(lambda a, b, c: sdpa(a, b, c, is_causal=True))
            if name == "sdpa" and not any(val == "ok" for val in kernels.values()):
                done("failed", "SDPA has no fused kernel here: every call falls back to the math kernel", **res)
        elif name == "flex_attention":
            from torch.nn.attention.flex_attention import flex_attention, create_block_mask
            mask = create_block_mask(lambda b, h, qi, ki: qi >= ki, None, None, S, S, device="cuda")
            flex = torch.compile(flex_attention)
            ok, res = check(lambda a, b, c: flex(a, b, c, block_mask=mask))
        elif name == "xformers":
            import xformers.ops as xops
            from xformers.ops.fmha.attn_bias import LowerTriangularMask
            causal = LowerTriangularMask()
            ok, res = check(lambda a, b, c: xops.memory_efficient_attention(a, b, c, attn_bias=causal), layout="bshd")
        elif name in ("flash_attention_2", "flash_attention_2_rocm", "flash_attention_2_rocm_triton"):
            from flash_attn import flash_attn_func
            ok, res = check(lambda a, b, c: flash_attn_func(a, b, c, causal=True), layout="bshd")
        elif name == "flash_attention_3":
            from flash_attn_interface import flash_attn_func
            ok, res = check(lambda a, b, c: flash_attn_func(a, b, c, causal=True), layout="bshd")
        elif name == "flash_attention_4":
            from flash_attn.cute import flash_attn_func
            ok, res = check(lambda a, b, c: flash_attn_func(a, b, c, causal=True), layout="bshd")
        elif name == "sage":
            import sageattention as sa
            # sageattn() is what axolotl calls: its per-arch dispatch is the kernel that must be right
            ok, res = check(lambda a, b, c: sa.sageattn(a, b, c, tensor_layout="HND", is_causal=True),
                            backward=False)
            if ok and hasattr(sa, "sageattn_varlen"):
                # with sample_packing axolotl calls sageattn_varlen: each batch row as one document
                cu = torch.arange(0, (B + 1) * S, S, device="cuda", dtype=torch.int32)
                def varlen(a, b, c):
                    pack = lambda t: t.transpose(1, 2).reshape(B * S, H, D)
                    o = sa.sageattn_varlen(pack(a), pack(b), pack(c), cu, cu, S, S, is_causal=True)
                    return o.reshape(B, S, H, D).transpose(1, 2)
                vok, vres = check(varlen, backward=False)
                res["varlen_rel_err"], res["varlen_cosine"] = vres["out_rel_err"], vres["out_cosine"]
                if not vok:
                    ok = False
                    res["wrong"] = "sageattn_varlen (the packed path)"
            if not ok and "wrong" not in res:
                right = []
                for alt in ("sageattn_qk_int8_pv_fp16_cuda", "sageattn_qk_int8_pv_fp16_triton",
                            "sageattn_qk_int8_pv_fp8_cuda"):
                    fn = getattr(sa, alt, None)
                    try:
                        if fn is not None and check(lambda a, b, c, fn=fn: fn(a, b, c, tensor_layout="HND",
                                                                                is_causal=True), backward=False)[0]:
                            right.append(alt)
                    except Exception:
                        pass
                res["kernels_right"] = right
        else:
            done("failed", f"no verification known for backend {name!r}")
    noise = [str(w.message) for w in caught if "C++/CUDA extensions" in str(w.message)]
    if noise and not (name == "xformers" and xformers_attention_in_aten()):
        done("failed", "extension not loaded: " + noise[0][:200], **res)
except Exception as e:
    msg = f"{type(e).__name__}: {e}".splitlines()[0][:300]
    done("failed", msg)
rel, cos = res["out_rel_err"], res["out_cosine"]
if ok:
    vl = f"; sageattn_varlen cosine {res['varlen_cosine']:.5f}" if "varlen_cosine" in res else ""
    done("passed", f"matches math SDPA (rel err {rel:.2e}, cosine {cos:.5f}){vl}", **res)
right = res.get("kernels_right")
extra = (f"; sageattn() picks a wrong kernel on this GPU while {', '.join(right)} "
         "are right (the config would run the wrong one)") if right else ""
if res.get("wrong"):
    rel, cos = res["varlen_rel_err"], res["varlen_cosine"]
    extra = f" in {res['wrong']}; sageattn() itself passed"
done("failed", f"output differs from math SDPA (rel err {rel:.3g}, cosine {cos:.3g}){extra}", **res)
'''


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


def parse_verify_output(backend: str, stdout: str, stderr: str, returncode: int,
                        timed_out: bool) -> VerifyResult:
    """The last JSON line the snippet printed; anything else is a failure with its last line."""
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
            return VerifyResult(backend, str(data["status"]), str(data.get("detail", "")), data)
    tail = [ln for ln in (stderr or stdout).strip().splitlines() if ln.strip()]
    return VerifyResult(backend, "failed",
                        f"verification crashed (exit {returncode}): {tail[-1] if tail else 'no output'}", {})


def verify_backend(runner: Runner, python: str, backend: str, *, dtype: str = "bf16",
                   head_dim: int = 128, timeout: float = VERIFY_TIMEOUT,
                   env: Optional[dict[str, str]] = None, rel_tol: float = REL_TOL,
                   min_cosine: float = MIN_COSINE) -> VerifyResult:
    """Run the check in a fresh ``python -I`` from an empty temporary directory; the output passes
    within ``rel_tol`` relative error and above ``min_cosine`` (the backend's matrix row)."""
    with tempfile.TemporaryDirectory(prefix="attn-install-verify-") as tmp:
        done = runner.run([python, "-I", "-c", SNIPPET, backend, dtype, str(head_dim), str(rel_tol),
                           str(min_cosine)], timeout=timeout, env=env, cwd=Path(tmp))
    return parse_verify_output(backend, done.stdout, done.stderr, done.returncode, done.timed_out)
