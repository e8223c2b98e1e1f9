"""Time attention backends on GPU 0 of the interpreter that runs this file (the user's torch env).

attn-install runs this text as ``python -I -c SNIPPET CONFIG_JSON`` from an empty temporary
directory (see attn_installer/bench.py); it also runs standalone:

    python -I attn_installer/_bench_snippet.py '{"batch": 4, "seq_len": 4096}'

It imports nothing from attn_installer and runs on Python >= 3.9. stdout carries JSON lines only
from this file, each with "attn_bench": 1 and a "kind": one "env" line (torch, GPU, or why nothing
can be measured: no torch, no GPU), one "result" line per backend (and per forced SDPA kernel) as
soon as it is measured, so a timeout keeps what finished, and a final "done" line. Progress goes
to stderr. Every backend runs inside its own try: one that errors is reported with its error and
the rest are still measured.

Method: CUDA events around each call, ``warmup`` untimed calls, then ``repeats`` timed calls;
median, min and max in ms. FLOPs: 4*B*H*S*S*D for the forward (two matmuls), half of that when
causal (per document when packed), 3.5x the forward for forward+backward (FA2 paper convention).
Peak memory: torch.cuda.max_memory_allocated over the backend's runs, inputs included.
Error: max |out - ref| over the first sequence (batch element 0 / the first packed row), ref being
fp32 softmax(QK^T/sqrt(D))V computed in blocks of queries so any length fits in memory.
GQA: FA2/3/4 take KV heads natively; for SDPA, flex, xformers and sage the KV heads are expanded
to H before timing (outside the timed region).
"""

import json
import math
import sys
import time

ALL_BACKENDS = ("sdpa", "flex_attention", "xformers", "flash_attention_2", "flash_attention_3",
                "flash_attention_4", "sage")
DISTRIBUTIONS = {
    "flex_attention": ("triton",),
    "xformers": ("xformers",),
    "flash_attention_2": ("flash-attn", "flash_attn"),
    "flash_attention_3": ("flash-attn-3", "flash_attn_3"),
    "flash_attention_4": ("flash-attn-4", "flash_attn_4", "flash-attn-cute"),
    "sage": ("sageattention",),
}
# The math kernel materialises a B*H*S*S score matrix (and more for backward): skip it above this.
MATH_LIMIT_BYTES = 2 << 30


def emit(kind, **fields):
    fields.update(attn_bench=1, kind=kind)
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def log(msg):
    sys.stderr.write(f"[attn-install bench] {msg}\n")
    sys.stderr.flush()


def short(exc):
    text = f"{type(exc).__name__}: {exc}".strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


class NotInstalled(Exception):
    pass


class Skipped(Exception):
    pass


def load(module, attr):
    """module.attr, NotInstalled when the module (or the attribute) is absent."""
    import importlib

    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        # a missing dependency *inside* an installed backend is an error, not "not installed"
        if e.name and (module == e.name or module.startswith(e.name + ".")):
            raise NotInstalled(f"no module named {module}") from None
        raise
    fn = getattr(mod, attr, None)
    if fn is None:
        raise NotInstalled(f"{module} has no {attr}")
    return fn


def dist_version(backend, torch):
    if backend in ("sdpa", "eager"):
        return torch.__version__
    from importlib import metadata

    for dist in DISTRIBUTIONS.get(backend, ()):
        try:
            v = metadata.version(dist)
        except Exception:
            continue
        return f"triton {v}" if backend == "flex_attention" else v
    return torch.__version__ if backend == "flex_attention" else None


def first(out):
    """Backends that return (out, lse) give their output first."""
    return out[0] if isinstance(out, (tuple, list)) else out


class Bench:
    def __init__(self, torch, cfg):
        self.torch = torch
        self.B = int(cfg.get("batch", 4))
        self.S = int(cfg.get("seq_len", 4096))
        self.H = int(cfg.get("heads", 32))
        self.KV = int(cfg.get("kv_heads", self.H))
        self.D = int(cfg.get("head_dim", 128))
        self.causal = bool(cfg.get("causal", True))
        self.packed = bool(cfg.get("packed", False))
        self.backward = cfg.get("workload", "full") != "inference"
        self.warmup = int(cfg.get("warmup", 3))
        self.repeats = int(cfg.get("repeats", 10))
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[cfg.get("dtype", "bf16")]
        if self.H % self.KV:
            raise ValueError(f"heads {self.H} is not a multiple of kv_heads {self.KV}")
        self.docs = self.doc_lengths()
        gen = torch.Generator(device="cuda").manual_seed(0)
        shape_q, shape_kv = (self.B, self.S, self.H, self.D), (self.B, self.S, self.KV, self.D)
        # one set of bshd inputs; every backend gets a copy in its own layout
        self.q = torch.randn(shape_q, device="cuda", dtype=self.dtype, generator=gen)
        self.k = torch.randn(shape_kv, device="cuda", dtype=self.dtype, generator=gen)
        self.v = torch.randn(shape_kv, device="cuda", dtype=self.dtype, generator=gen)
        self.grad = torch.randn(shape_q, device="cuda", dtype=self.dtype, generator=gen)
        self.ref = self.reference()

    # ----------------------------------------------------------------- shapes and FLOPs

    def doc_lengths(self):
        """Per packed row: documents of S/2, S/4, S/8 and the rest (4 per row)."""
        if not self.packed:
            return [self.S]
        a, b, c = self.S // 2, self.S // 4, self.S // 8
        return [n for n in (a, b, c, self.S - a - b - c) if n > 0]

    def flops_fwd(self):
        per_row = sum((n * n) / (2 if self.causal else 1) for n in self.docs)
        return 4.0 * self.B * self.H * self.D * per_row

    def shape(self):
        return {"batch": self.B, "seq_len": self.S, "heads": self.H, "kv_heads": self.KV,
                "head_dim": self.D, "causal": self.causal, "packed": self.packed,
                "doc_lengths": self.docs if self.packed else None}

    # ----------------------------------------------------------------- reference

    def doc_ids(self, n):
        torch = self.torch
        ids = torch.cat([torch.full((m,), i, dtype=torch.int32) for i, m in enumerate(self.docs)])
        return ids[:n].to("cuda")

    def reference(self):
        """fp32 attention for batch element 0 (the first packed row), bshd (1, S, H, D)."""
        torch = self.torch
        rep = self.H // self.KV
        q = self.q[0].float().transpose(0, 1)  # H, S, D
        k = self.k[0].float().transpose(0, 1).repeat_interleave(rep, dim=0)
        v = self.v[0].float().transpose(0, 1).repeat_interleave(rep, dim=0)
        doc = self.doc_ids(self.S) if self.packed else None
        kpos = torch.arange(self.S, device="cuda")
        scale = 1.0 / math.sqrt(self.D)
        # keep each block's H*blk*S fp32 scores near 1 GiB
        blk = max(1, min(self.S, (1 << 28) // max(1, self.H * self.S)))
        outs = []
        for s in range(0, self.S, blk):
            e = min(self.S, s + blk)
            scores = torch.matmul(q[:, s:e], k.transpose(1, 2)) * scale
            qpos = torch.arange(s, e, device="cuda")
            allowed = torch.ones(e - s, self.S, dtype=torch.bool, device="cuda")
            if self.causal:
                allowed &= qpos[:, None] >= kpos[None, :]
            if doc is not None:
                allowed &= doc[s:e][:, None] == doc[None, :]
            scores.masked_fill_(~allowed, float("-inf"))
            outs.append(torch.matmul(torch.softmax(scores, dim=-1), v))
            del scores
        return torch.cat(outs, dim=1).transpose(0, 1).unsqueeze(0)  # 1, S, H, D

    def max_err(self, out_bshd):
        o = out_bshd[:1].float()
        if not bool(self.torch.isfinite(o).all()):
            return float("inf")
        return float((o - self.ref).abs().max())

    # ----------------------------------------------------------------- layouts

    def leaf(self, t):
        return t.detach().clone().requires_grad_(self.backward)

    def expanded(self, t):
        return t.repeat_interleave(self.H // self.KV, dim=2) if self.H != self.KV else t

    def inputs(self, layout, gqa):
        """(q, k, v, grad) as leaves in layout bshd / bhsd / thd (packed: B*S tokens)."""
        k, v = (self.k, self.v) if gqa else (self.expanded(self.k), self.expanded(self.v))
        ts = [self.q, k, v, self.grad]
        if layout == "bhsd":
            ts = [t.transpose(1, 2).contiguous() for t in ts]
        elif layout == "thd":
            ts = [t.reshape(self.B * self.S, t.shape[2], self.D) for t in ts]
        elif layout == "1td":  # xformers packed: one batch row of all tokens
            ts = [t.reshape(1, self.B * self.S, t.shape[2], self.D) for t in ts]
        q, k, v, g = ts
        return self.leaf(q), self.leaf(k), self.leaf(v), g.detach()

    def to_bshd(self, out, layout):
        if layout == "bhsd":
            return out.transpose(1, 2)
        if layout in ("thd", "1td"):
            return out.reshape(self.B, self.S, self.H, self.D)
        return out

    def cu_seqlens(self):
        torch = self.torch
        lengths = self.docs * self.B
        cu = [0]
        for n in lengths:
            cu.append(cu[-1] + n)
        return torch.tensor(cu, dtype=torch.int32, device="cuda"), max(lengths)

    # ----------------------------------------------------------------- timing

    def time_calls(self, fn):
        torch = self.torch
        for _ in range(self.warmup):
            fn()
        torch.cuda.synchronize()
        times = []
        for _ in range(self.repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        times.sort()
        n = len(times)
        median = times[n // 2] if n % 2 else (times[n // 2 - 1] + times[n // 2]) / 2
        return {"median": median, "min": times[0], "max": times[-1], "n": n}

    def measure(self, call, layout, gqa=False, backward=None):
        """Time call(q, k, v) forward and forward+backward; error of its output vs the reference."""
        torch = self.torch
        backward = self.backward if backward is None else backward
        q, k, v, g = self.inputs(layout, gqa)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        res = {}
        with torch.no_grad():
            out = first(call(q, k, v))
            res["max_abs_err"] = self.max_err(self.to_bshd(out, layout))
            del out
            res["fwd_ms"] = self.time_calls(lambda: call(q, k, v))
        fwd_flops = self.flops_fwd()
        res["fwd_tflops"] = fwd_flops / (res["fwd_ms"]["median"] * 1e-3) / 1e12
        if backward:
            def step():
                q.grad = k.grad = v.grad = None
                first(call(q, k, v)).backward(g)

            res["fwdbwd_ms"] = self.time_calls(step)
            res["fwdbwd_tflops"] = 3.5 * fwd_flops / (res["fwdbwd_ms"]["median"] * 1e-3) / 1e12
        torch.cuda.synchronize()
        res["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
        return res

    # ----------------------------------------------------------------- backends

    def sdpa_call(self):
        sdpa = self.torch.nn.functional.scaled_dot_product_attention
        causal = self.causal
        return lambda q, k, v: sdpa(q, k, v, is_causal=causal)

    def sdpa_kernels(self):
        """SDPA forced to each fused kernel, then math (small shapes only)."""
        from torch.nn.attention import SDPBackend, sdpa_kernel

        for kname, enum in (("cudnn", "CUDNN_ATTENTION"), ("flash", "FLASH_ATTENTION"),
                            ("efficient", "EFFICIENT_ATTENTION"), ("math", "MATH")):
            kb = getattr(SDPBackend, enum, None)
            if kb is None:
                yield kname, None, f"this torch has no SDPBackend.{enum}"
                continue
            if kname == "math":
                need = self.B * self.H * self.S * self.S * self.q.element_size()
                if need > MATH_LIMIT_BYTES:
                    yield kname, None, (f"math kernel skipped: it materialises a B*H*S*S score matrix "
                                        f"({need / 2**30:.1f} GiB) at this shape")
                    continue
            call = self.sdpa_call()

            def forced(q, k, v, call=call, kb=kb):
                with sdpa_kernel([kb]):
                    return call(q, k, v)

            yield kname, forced, None

    def sdpa_default_kernel(self):
        """Which kernel SDPA's default dispatch ran, from torch.profiler op and kernel names."""
        torch = self.torch
        from torch.profiler import ProfilerActivity, profile

        q, k, v, _ = self.inputs("bhsd", gqa=False)
        call = self.sdpa_call()
        with torch.no_grad():
            call(q, k, v)
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                call(q, k, v)
                torch.cuda.synchronize()
        names = [str(e.name) for e in prof.events()]
        hints = ("attention", "fmha", "flash", "cudnn", "sdpa", "softmax")
        return classify_kernel(names), [n for n in dict.fromkeys(names) if any(h in n.lower() for h in hints)][:6]

    def flex_call(self):
        torch = self.torch
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        causal = self.causal
        if self.packed:
            doc = self.doc_ids(self.S).repeat(self.B)  # document id of each of B*S tokens
            n = self.B * self.S

            def mask_mod(b, h, qi, ki):
                same = doc[qi] == doc[ki]
                return same & (qi >= ki) if causal else same
        else:
            n = self.S

            def mask_mod(b, h, qi, ki):
                return qi >= ki

        mask = create_block_mask(mask_mod, None, None, n, n, device="cuda") if (causal or self.packed) else None
        flex = torch.compile(flex_attention)
        return lambda q, k, v: flex(q, k, v, block_mask=mask)

    def run_backend(self, name):
        """Yield (variant, result dict) for one backend; raises NotInstalled / Skipped / errors."""
        torch = self.torch
        causal, packed = self.causal, self.packed
        if name == "sdpa":
            if packed:
                raise Skipped("SDPA has no packed (varlen) path; it needs a dense block-diagonal mask")
            try:
                res = self.measure(self.sdpa_call(), "bhsd")
            except Exception as e:  # the forced kernels below still say which ones work
                res = {"status": "error", "detail": short(e)}
            else:
                try:
                    res["kernel"], res["profiler_names"] = self.sdpa_default_kernel()
                except Exception as e:
                    res["kernel"], res["kernel_detail"] = "unknown", short(e)
            torch.cuda.empty_cache()
            yield None, res
            for kname, forced, why in self.sdpa_kernels():
                if forced is None:
                    yield kname, {"status": "skipped", "detail": why}
                    continue
                try:
                    yield kname, self.measure(forced, "bhsd")
                except Exception as e:
                    yield kname, {"status": "error", "detail": short(e)}
                finally:
                    torch.cuda.empty_cache()
        elif name == "flex_attention":
            load("torch.nn.attention.flex_attention", "flex_attention")
            if packed:
                flex = self.flex_call()

                def call(q, k, v):  # thd (T, H, D) -> flex's bhsd (1, H, T, D) and back
                    return flex(*(t.transpose(0, 1).unsqueeze(0) for t in (q, k, v)))[0].transpose(0, 1)

                yield None, self.measure(call, "thd")
            else:
                yield None, self.measure(self.flex_call(), "bhsd")
        elif name == "xformers":
            mea = load("xformers.ops", "memory_efficient_attention")
            from xformers.ops import fmha

            if packed:
                lengths = self.docs * self.B
                cls = fmha.attn_bias.BlockDiagonalCausalMask if causal else fmha.attn_bias.BlockDiagonalMask
                bias = cls.from_seqlens(lengths)
                yield None, self.measure(lambda q, k, v: mea(q, k, v, attn_bias=bias), "1td")
            else:
                bias = fmha.attn_bias.LowerTriangularMask() if causal else None
                yield None, self.measure(lambda q, k, v: mea(q, k, v, attn_bias=bias), "bshd")
        elif name in ("flash_attention_2", "flash_attention_3"):
            module = "flash_attn" if name == "flash_attention_2" else "flash_attn_interface"
            if packed:
                fa = load(module, "flash_attn_varlen_func")
                cu, mx = self.cu_seqlens()
                yield None, self.measure(lambda q, k, v: fa(q, k, v, cu_seqlens_q=cu, cu_seqlens_k=cu, max_seqlen_q=mx,
                                                            max_seqlen_k=mx, causal=causal), "thd", gqa=True)
            else:
                fa = load(module, "flash_attn_func")
                yield None, self.measure(lambda q, k, v: fa(q, k, v, causal=causal), "bshd", gqa=True)
        elif name == "flash_attention_4":
            if packed:
                fa = load("flash_attn.cute", "flash_attn_varlen_func")
                cu, _mx = self.cu_seqlens()
                yield None, self.measure(lambda q, k, v: fa(q, k, v, cu_seqlens_q=cu, cu_seqlens_k=cu,
                                                            causal=causal), "thd", gqa=True)
            else:
                fa = load("flash_attn.cute", "flash_attn_func")
                yield None, self.measure(lambda q, k, v: fa(q, k, v, causal=causal), "bshd", gqa=True)
        elif name == "sage":
            # inference / LoRA kernel: forward only
            if packed:  # sageattn_varlen is what axolotl calls with sample_packing (a Triton kernel)
                sage = load("sageattention", "sageattn_varlen")
                cu, mx = self.cu_seqlens()
                yield None, self.measure(lambda q, k, v: sage(q, k, v, cu, cu, mx, mx, is_causal=causal),
                                         "thd", gqa=True, backward=False)
            else:
                sage = load("sageattention", "sageattn")
                yield None, self.measure(lambda q, k, v: sage(q, k, v, tensor_layout="HND", is_causal=causal),
                                         "bhsd", backward=False)
        else:
            raise Skipped(f"no measurement known for backend {name!r}")


def classify_kernel(names):
    """cudnn / flash / efficient / math / unknown from profiler event names (op or kernel)."""
    low = " ".join(names).lower()
    if "cudnn" in low:
        return "cudnn"
    if "flash" in low:
        return "flash"
    if "efficient" in low or "fmha" in low or "cutlass" in low:
        return "efficient"
    if "attention_math" in low or "_math" in low:
        return "math"
    return "unknown"


def main(argv):
    cfg = json.loads(argv[1]) if len(argv) > 1 and argv[1].strip() else {}
    backends = cfg.get("backends") or list(ALL_BACKENDS)
    try:
        import torch
    except Exception as e:
        emit("env", status="no_torch", detail=f"torch cannot be imported: {short(e)}", python=sys.executable)
        emit("done")
        return 0
    env = {"python": sys.executable, "torch": torch.__version__, "torch_cuda": torch.version.cuda,
           "torch_hip": getattr(torch.version, "hip", None)}
    if not torch.cuda.is_available():
        emit("env", status="no_gpu", detail="torch.cuda.is_available() is False: no GPU to measure", **env)
        emit("done")
        return 0
    props = torch.cuda.get_device_properties(0)
    env.update(gpu=torch.cuda.get_device_name(0), capability=f"{props.major}.{props.minor}",
               gpu_memory_gib=round(props.total_memory / 2**30, 1))
    started = time.monotonic()
    try:
        bench = Bench(torch, cfg)
    except Exception as e:
        emit("env", status="error", detail=f"could not set up the inputs: {short(e)}", **env)
        emit("done")
        return 0
    emit("env", status="ok", detail="", shape=bench.shape(), dtype=cfg.get("dtype", "bf16"), backends=backends,
         warmup=bench.warmup, repeats=bench.repeats, **env)
    for name in backends:
        log(f"measuring {name} ...")
        t0 = time.monotonic()
        base = {"backend": name, "version": None}
        try:
            base["version"] = dist_version(name, torch)
        except Exception:
            pass
        try:
            for variant, res in bench.run_backend(name):
                res.setdefault("status", "ok")
                res.setdefault("detail", "")
                emit("result", **base, variant=variant, seconds=round(time.monotonic() - t0, 2), **res)
        except NotInstalled as e:
            emit("result", **base, variant=None, status="not installed", detail=str(e))
        except Skipped as e:
            emit("result", **base, variant=None, status="skipped", detail=str(e))
        except Exception as e:
            emit("result", **base, variant=None, status="error", detail=short(e))
        finally:
            torch.cuda.empty_cache()
    emit("done", seconds=round(time.monotonic() - started, 2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
