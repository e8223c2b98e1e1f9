"""Time attention backends on GPU 0 of the interpreter that runs this file (the user's torch env).

attn-install runs it in a fresh ``python -I`` from an empty temporary directory (see
attn_installer/bench/); it also runs standalone:

    python attn_installer/target/attn_bench.py '{"batch": 4, "seq_len": 4096, "calls": {...}}'

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
Error: of the output over the first sequence (batch element 0 / the first packed row) against fp32
attention (attn_calls.reference): relative L2 error, cosine and max abs error; with a backward, of
dq, dk, dv too, in a smaller second run (the first row at up to GRAD_CHECK_SEQ tokens, the same
call). attn-install judges these numbers (attn_installer/judge.py) before it ranks anything.
Each result carries "build", the digest of the backend's installed files (attn_builds.py).
How each backend is called (layout, GQA, varlen entry point) is its ``call`` entry of
matrices/backends.toml, passed in "calls"; the layout change happens before timing.
"""

import json
import sys
import time

# The math kernel materialises a B*H*S*S score matrix (and more for backward): skip it above this.
MATH_LIMIT_BYTES = 2 << 30
GRAD_CHECK_SEQ = 1024
"""Gradients are checked on the first row at up to this many tokens (the fp32 reference keeps the
S x S scores of every head for its backward)."""


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


class Skipped(Exception):
    pass


def dist_version(backend, torch, dists):
    if backend in ("sdpa", "eager"):
        return torch.__version__
    from importlib import metadata

    for dist in dists:
        try:
            v = metadata.version(dist)
        except Exception:  # noqa: S112 - the next name may be the installed one
            continue
        return f"triton {v}" if backend == "flex_attention" else v
    return torch.__version__ if backend == "flex_attention" else None


class Bench:
    def __init__(self, torch, calls, cfg):
        self.torch = torch
        self.calls = calls
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
        self.docs = self.doc_lengths(self.S)
        gen = torch.Generator(device="cuda").manual_seed(0)
        shape_q, shape_kv = (self.B, self.S, self.H, self.D), (self.B, self.S, self.KV, self.D)
        self.q = torch.randn(shape_q, device="cuda", dtype=self.dtype, generator=gen)
        self.k = torch.randn(shape_kv, device="cuda", dtype=self.dtype, generator=gen)
        self.v = torch.randn(shape_kv, device="cuda", dtype=self.dtype, generator=gen)
        docs = self.docs if self.packed else None
        self.ref = calls.reference(torch, self.q, self.k, self.v, self.causal, docs=docs, rows=[0])

    def doc_lengths(self, seq):
        """Per packed row: documents of S/2, S/4, S/8 and the rest (4 per row)."""
        if not self.packed:
            return [seq]
        a, b, c = seq // 2, seq // 4, seq // 8
        return [n for n in (a, b, c, seq - a - b - c) if n > 0]

    def flops_fwd(self):
        per_row = sum((n * n) / (2 if self.causal else 1) for n in self.docs)
        return 4.0 * self.B * self.H * self.D * per_row

    def shape(self):
        return {"batch": self.B, "seq_len": self.S, "heads": self.H, "kv_heads": self.KV,
                "head_dim": self.D, "causal": self.causal, "packed": self.packed,
                "doc_lengths": self.docs if self.packed else None}

    def adapter(self, spec):
        return self.calls.Adapter(self.torch, spec, self.causal, self.H, self.KV,
                                  docs=self.docs if self.packed else None, batch=self.B, seq=self.S)

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

    def measure(self, ad, backward=None, wrap=None):
        """Time the adapter's call forward and forward+backward on leaves in its own layout; the
        error of its output (first row) against the fp32 reference."""
        torch = self.torch
        backward = self.backward if backward is None else backward
        call = ad.varlen_call if self.packed else ad.call
        if wrap is not None:
            call = wrap(call)
        if self.packed:
            def pack(t):
                return t.reshape(self.B * self.S, t.shape[2], self.D)
            native = ad.varlen_native(pack(self.q), pack(self.k), pack(self.v))

            def to_bshd(o):
                return ad.varlen_to_thd(o).reshape(self.B, self.S, self.H, self.D)
        else:
            native = ad.native(self.q, self.k, self.v)
            to_bshd = ad.to_bshd
        q, k, v = (t.detach().contiguous().requires_grad_(backward) for t in native)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        res: dict = {}
        with torch.no_grad():
            raw = self.calls.first(call(q, k, v))
            err = self.calls.compare(torch, to_bshd(raw)[:1], self.ref)
            res.update(max_abs_err=err["max_abs_err"], rel_err=err["rel_err"], cosine=err["cosine"])
            shape = raw.shape
            del raw
            res["fwd_ms"] = self.time_calls(lambda: call(q, k, v))
        fwd_flops = self.flops_fwd()
        res["fwd_tflops"] = fwd_flops / (res["fwd_ms"]["median"] * 1e-3) / 1e12
        if backward:
            gen = torch.Generator(device="cuda").manual_seed(1)
            g = torch.randn(shape, device="cuda", dtype=self.dtype, generator=gen)

            def step():
                q.grad = k.grad = v.grad = None
                self.calls.first(call(q, k, v)).backward(g)

            res["fwdbwd_ms"] = self.time_calls(step)
            res["fwdbwd_tflops"] = 3.5 * fwd_flops / (res["fwdbwd_ms"]["median"] * 1e-3) / 1e12
        torch.cuda.synchronize()
        res["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
        if backward:
            q.grad = k.grad = v.grad = None
            try:
                res["grads"] = self.grad_check(ad.spec, wrap)
            except Exception as e:
                res["grads"] = {"status": "error", "detail": short(e)}
        return res

    def grad_check(self, spec, wrap=None):
        """dq, dk, dv of the same call against the fp32 reference's gradients, on the first row at
        up to GRAD_CHECK_SEQ tokens (leaves in bshd, so a GQA reduction back to the KV heads is
        part of what is checked)."""
        torch, calls = self.torch, self.calls
        s = min(self.S, GRAD_CHECK_SEQ)
        docs = self.doc_lengths(s) if self.packed else None
        ad = calls.Adapter(torch, spec, self.causal, self.H, self.KV, docs=docs, batch=1, seq=s)
        q, k, v = (t[:1, :s].detach().clone().requires_grad_(True) for t in (self.q, self.k, self.v))
        gen = torch.Generator(device="cuda").manual_seed(2)
        g = torch.randn(1, s, self.H, self.D, device="cuda", dtype=self.dtype, generator=gen)
        call = ad.varlen_call if self.packed else ad.call
        if wrap is not None:
            call = wrap(call)
        if self.packed:
            def pack(t):
                return t.reshape(s, t.shape[2], self.D)
            o = ad.varlen_to_thd(call(*ad.varlen_native(pack(q), pack(k), pack(v)))).reshape(1, s, self.H, self.D)
        else:
            o = ad.to_bshd(call(*ad.native(q, k, v)))
        o.backward(g)
        leaves = [t.detach().float().requires_grad_(True) for t in (q, k, v)]
        ref = calls.reference(torch, *leaves, self.causal, docs=docs)
        ref.backward(g.float())
        out = {"status": "ok", "detail": "", "seq_len": s}
        for name, t, rt in zip(("dq", "dk", "dv"), (q, k, v), leaves):
            if t.grad is None:
                raise RuntimeError(f"no gradient reached {name[1]}")
            m = calls.compare(torch, t.grad, rt.grad)
            out[f"{name}_rel_err"], out[f"{name}_cosine"] = m["rel_err"], m["cosine"]
        torch.cuda.synchronize()
        return out

    # SDPA --------------------------------------------------------------------

    def sdpa_forced(self, spec):
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

            def wrap(call, kb=kb):
                def forced(q, k, v):
                    with sdpa_kernel([kb]):
                        return call(q, k, v)
                return forced

            yield kname, wrap, None

    def sdpa_default_kernel(self, ad):
        """Which kernel SDPA's default dispatch ran, from torch.profiler op and kernel names."""
        torch = self.torch
        from torch.profiler import ProfilerActivity, profile

        q, k, v = ad.native(self.q, self.k, self.v)
        with torch.no_grad():
            ad.call(q, k, v)
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                ad.call(q, k, v)
                torch.cuda.synchronize()
        names = [str(e.name) for e in prof.events()]
        hints = ("attention", "fmha", "flash", "cudnn", "sdpa", "softmax")
        return classify_kernel(names), [n for n in dict.fromkeys(names) if any(h in n.lower() for h in hints)][:6]

    def run_backend(self, name, spec):
        """Yield (variant, result dict) for one backend; raises NotInstalled / Skipped / errors."""
        ad = self.adapter(spec)
        if self.packed and not ad.has_varlen:
            raise Skipped(f"{name} has no packed (varlen) path; it needs a dense block-diagonal mask")
        backward = self.backward and spec.get("backward", True)
        if spec["convention"] != "sdpa":
            yield None, self.measure(ad, backward=backward)
            return
        try:
            res = self.measure(ad)
        except Exception as e:  # the forced kernels below still say which ones work
            res = {"status": "error", "detail": short(e)}
        else:
            try:
                res["kernel"], res["profiler_names"] = self.sdpa_default_kernel(ad)
            except Exception as e:
                res["kernel"], res["kernel_detail"] = "unknown", short(e)
        self.torch.cuda.empty_cache()
        yield None, res
        for kname, wrap, why in self.sdpa_forced(spec):
            if wrap is None:
                yield kname, {"status": "skipped", "detail": why}
                continue
            try:
                yield kname, self.measure(ad, wrap=wrap)
            except Exception as e:
                yield kname, {"status": "error", "detail": short(e)}
            finally:
                self.torch.cuda.empty_cache()


def classify_kernel(names):
    """cudnn / flash / efficient / math / unknown from profiler event names (attn_calls has the rule)."""
    import attn_calls

    return attn_calls.classify_kernel(names)


def main(argv):
    cfg = json.loads(argv[1]) if len(argv) > 1 and argv[1].strip() else {}
    calls_table = cfg.get("calls") or {}
    backends = cfg.get("backends") or list(calls_table)
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
    import attn_calls as calls

    props = torch.cuda.get_device_properties(0)
    env.update(gpu=torch.cuda.get_device_name(0), capability=f"{props.major}.{props.minor}",
               gpu_memory_gib=round(props.total_memory / 2**30, 1))
    started = time.monotonic()
    try:
        bench = Bench(torch, calls, cfg)
    except Exception as e:
        emit("env", status="error", detail=f"could not set up the inputs: {short(e)}", **env)
        emit("done")
        return 0
    emit("env", status="ok", detail="", shape=bench.shape(), dtype=cfg.get("dtype", "bf16"), backends=backends,
         warmup=bench.warmup, repeats=bench.repeats, **env)
    dists = cfg.get("distributions") or {}
    builds = cfg.get("builds") or {}
    try:
        import attn_builds

        installed = attn_builds.distributions()
    except Exception as e:  # the digest is a label: a failure to read it costs the ranking, not the run
        log(f"cannot read the installed builds: {short(e)}")
        attn_builds, installed = None, {}
    for name in backends:
        log(f"measuring {name} ...")
        t0 = time.monotonic()
        base = {"backend": name, "version": None}
        try:
            base["version"] = dist_version(name, torch, dists.get(name, ()))
        except Exception:  # noqa: S110 - the version is a label only
            pass
        if attn_builds is not None and name in builds:
            base["build"] = attn_builds.build_digest(builds[name], installed)
        try:
            spec = calls_table.get(name)
            if spec is None:
                raise Skipped(f"no measurement known for backend {name!r}")
            for variant, res in bench.run_backend(name, spec):
                res.setdefault("status", "ok")
                res.setdefault("detail", "")
                emit("result", **base, variant=variant, seconds=round(time.monotonic() - t0, 2), **res)
        except calls.NotInstalled as e:
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
