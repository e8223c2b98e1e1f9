"""How each attention backend is called, and the fp32 reference it is judged against.

Runs inside the user's Python (the environment that holds torch), imported by attn_verify.py and
attn_bench.py; it imports nothing from attn_installer and runs on Python >= 3.9. The table of what
to call comes from matrices/backends.toml (each backend's ``call``), passed in as a dict:

    {"convention": "flash", "module": "flash_attn", "function": "flash_attn_func",
     "varlen": "flash_attn_varlen_func", "layout": "bshd", "gqa": true, ...}

The convention picks the adapter below; everything else is data. Tensors enter and leave the
adapters in one layout, bshd (batch, seq, heads, head_dim); packed (varlen) inputs are thd
(tokens, heads, head_dim) with cu_seqlens over every document of every row.
"""

import importlib
import math

__all__ = ["Adapter", "NotInstalled", "classify_kernel", "compare", "cu_seqlens", "doc_ids", "first", "import_module",
           "ran_kernels", "reference"]


class NotInstalled(Exception):
    """The backend's module (or its entry point) is not there."""


def import_module(module):
    """The backend's module. ``hub:org/name@revision``: a Hugging Face Hub kernel, loaded the way
    transformers loads it, by the `kernels` package (from the cache when HF_HUB_OFFLINE is set)."""
    if module.startswith("hub:"):
        repo, _, revision = module[4:].partition("@")
        try:
            from kernels import get_kernel
        except ModuleNotFoundError as e:
            if e.name == "kernels":
                raise NotInstalled("no module named kernels (the hub kernel loader)") from None
            raise
        return get_kernel(repo, revision=revision or None)
    return importlib.import_module(module)


def load(module, attr):
    """module.attr; NotInstalled when the module itself is absent (a missing dependency *inside*
    an installed backend is an error of that backend, raised as is)."""
    try:
        mod = import_module(module)
    except ModuleNotFoundError as e:
        if e.name and (module == e.name or module.startswith(e.name + ".")):
            raise NotInstalled(f"no module named {module}") from None
        raise
    fn = getattr(mod, attr, None)
    if fn is None:
        raise NotInstalled(f"{module} has no {attr}")
    return fn


def first(out):
    """Backends that return (out, lse) give their output first."""
    return out[0] if isinstance(out, (tuple, list)) else out


# --------------------------------------------------------------------------- documents and reference


def doc_ids(torch, docs, batch, seq, device):
    """(batch, seq) document index of every token, unique across rows (a row never attends another)."""
    row = torch.cat([torch.full((n,), i, dtype=torch.int64) for i, n in enumerate(docs)])[:seq]
    ids = torch.stack([row + b * len(docs) for b in range(batch)])
    return ids.to(device)


def cu_seqlens(torch, docs, batch, device):
    """Cumulative document lengths over all rows (int32), and the longest document."""
    lengths = list(docs) * batch
    cu = [0]
    for n in lengths:
        cu.append(cu[-1] + n)
    return torch.tensor(cu, dtype=torch.int32, device=device), max(lengths)


def reference(torch, q, k, v, causal, docs=None, rows=None, block_bytes=1 << 30):
    """fp32 softmax(QK^T / sqrt(D)) V for bshd inputs (KV heads repeated to the query heads), masked
    causally and / or to documents; computed in blocks of queries so any length fits in memory.
    ``rows``: only these batch rows (bench checks the first one). Differentiable in q, k, v."""
    batch, seq, heads, dim = q.shape
    rep = heads // k.shape[2]
    rows = list(range(batch)) if rows is None else list(rows)
    scale = 1.0 / math.sqrt(dim)
    ids = doc_ids(torch, docs, batch, seq, q.device) if docs else None
    kpos = torch.arange(seq, device=q.device)
    outs = []
    for b in rows:
        qb = q[b].float().transpose(0, 1)  # H, S, D
        kb = k[b].float().transpose(0, 1).repeat_interleave(rep, dim=0)
        vb = v[b].float().transpose(0, 1).repeat_interleave(rep, dim=0)
        blk = max(1, min(seq, block_bytes // max(1, 4 * heads * seq)))
        parts = []
        for s in range(0, seq, blk):
            e = min(seq, s + blk)
            scores = torch.matmul(qb[:, s:e], kb.transpose(1, 2)) * scale
            allowed = torch.ones(e - s, seq, dtype=torch.bool, device=q.device)
            if causal:
                allowed = allowed & (torch.arange(s, e, device=q.device)[:, None] >= kpos[None, :])
            if ids is not None:
                allowed = allowed & (ids[b, s:e][:, None] == ids[b][None, :])
            scores = scores.masked_fill(~allowed, float("-inf"))
            parts.append(torch.matmul(torch.softmax(scores, dim=-1), vb))
        outs.append(torch.cat(parts, dim=1).transpose(0, 1))  # S, H, D
    return torch.stack(outs)


def compare(torch, out, ref):
    """Relative L2 error, cosine similarity and max abs error of *out* against *ref* (any shape)."""
    o, r = out.detach().float().reshape(-1), ref.detach().float().reshape(-1)
    if not bool(torch.isfinite(o).all()):
        return {"rel_err": float("inf"), "cosine": 0.0, "max_abs_err": float("inf")}
    norm = r.norm()
    rel = float((o - r).norm() / norm) if float(norm) > 0 else float((o - r).norm())
    cos = float(torch.nn.functional.cosine_similarity(o, r, dim=0)) if float(norm) > 0 else 0.0
    return {"rel_err": rel, "cosine": cos, "max_abs_err": float((o - r).abs().max())}


def classify_kernel(names):
    """SDPA: cudnn / flash / efficient / math / unknown from profiler event names (op or kernel)."""
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


def ran_kernels(torch, fn):
    """Run *fn* once under torch.profiler: (every event name, the GPU kernels by time spent, longest
    first). The names say which kernel actually ran (SDPA's dispatch, a backend's own extension)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    names = []
    spent: dict = {}
    for e in prof.events():
        name = str(e.name)
        names.append(name)
        if str(getattr(e, "device_type", "")).upper().endswith(("CUDA", "PRIVATEUSE1", "HIP")):
            t = getattr(e, "device_time", None)
            if t is None:
                t = getattr(e, "cuda_time", 0.0)
            spent[name] = spent.get(name, 0.0) + float(t or 0.0)
    return names, [n for n, _ in sorted(spent.items(), key=lambda x: -x[1])]


# --------------------------------------------------------------------------- adapters


class Adapter:
    """One backend's call, built from its ``call`` entry of matrices/backends.toml.

    ``native(q, k, v)`` turns bshd tensors into what the backend takes (layout, expanded KV heads),
    ``call(*native)`` is the timed call, ``to_bshd(out)`` turns its output back. ``varlen_native`` /
    ``varlen_call`` / ``varlen_to_thd`` do the same for packed thd inputs."""

    def __init__(self, torch, spec, causal, heads, kv_heads, docs=None, batch=1, seq=0, device="cuda"):
        self.torch = torch
        self.spec = spec
        self.convention = spec["convention"]
        self.causal = causal
        self.rep = heads // kv_heads
        self.docs = docs
        self.batch = batch
        self.seq = seq
        self.device = device
        self._fn = None
        self._vfn = None

    # dense ------------------------------------------------------------------

    def _expand(self, t):
        return t.repeat_interleave(self.rep, dim=2) if self.rep > 1 else t

    def native(self, q, k, v):
        if not self.spec.get("gqa"):
            k, v = self._expand(k), self._expand(v)
        if self.spec.get("layout", "bshd") == "bhsd":
            return tuple(t.transpose(1, 2) for t in (q, k, v))
        return q, k, v

    def to_bshd(self, out):
        out = first(out)
        return out.transpose(1, 2) if self.spec.get("layout", "bshd") == "bhsd" else out

    def fn(self):
        if self._fn is None:
            self._fn = self._make()
        return self._fn

    def call(self, q, k, v):
        return self.fn()(q, k, v)

    def _make(self):
        torch, spec, causal = self.torch, self.spec, self.causal
        conv = self.convention
        if conv == "sdpa":
            sdpa = torch.nn.functional.scaled_dot_product_attention
            return lambda q, k, v: sdpa(q, k, v, is_causal=causal)
        if conv == "eager":
            return lambda q, k, v: eager_attention(torch, q, k, v, causal)
        if conv == "flex":
            flex_attention = load(spec["module"], spec["function"])
            create_block_mask = load(spec["module"], "create_block_mask")
            compiled = torch.compile(flex_attention)
            seq = self.seq
            mask = create_block_mask(lambda b, h, qi, ki: qi >= ki, None, None, seq, seq,
                                     device=self.device) if causal else None
            return lambda q, k, v: compiled(q, k, v, block_mask=mask)
        if conv == "xformers":
            mea = load(spec["module"], spec["function"])
            bias = importlib.import_module("xformers.ops.fmha.attn_bias").LowerTriangularMask() if causal else None
            return lambda q, k, v: mea(q, k, v, attn_bias=bias)
        if conv == "flash":
            fa = load(spec["module"], spec["function"])
            return lambda q, k, v: fa(q, k, v, causal=causal)
        if conv == "sage":
            sage = load(spec["module"], spec["function"])
            return lambda q, k, v: sage(q, k, v, tensor_layout="HND", is_causal=causal)
        raise NotInstalled(f"no adapter for convention {conv!r}")

    # packed -----------------------------------------------------------------

    @property
    def has_varlen(self):
        return bool(self.spec.get("varlen"))

    def varlen_native(self, q, k, v):
        """thd inputs (all rows' tokens) into the backend's packed layout."""
        if not self.spec.get("varlen_gqa"):
            k, v = (t.repeat_interleave(self.rep, dim=1) if self.rep > 1 else t for t in (k, v))
        conv = self.convention
        if conv == "xformers":
            return tuple(t.unsqueeze(0) for t in (q, k, v))  # one batch row of all tokens
        if conv == "flex":
            return tuple(t.transpose(0, 1).unsqueeze(0) for t in (q, k, v))  # 1, H, T, D
        return q, k, v

    def varlen_to_thd(self, out):
        out = first(out)
        if self.convention == "xformers":
            return out[0]
        if self.convention == "flex":
            return out[0].transpose(0, 1)
        return out

    def varlen_fn(self):
        if self._vfn is None:
            self._vfn = self._make_varlen()
        return self._vfn

    def varlen_call(self, q, k, v):
        return self.varlen_fn()(q, k, v)

    def _make_varlen(self):
        torch, spec, causal, docs = self.torch, self.spec, self.causal, self.docs
        conv = self.convention
        cu, mx = cu_seqlens(torch, docs, self.batch, self.device)
        if conv == "flash":
            fa = load(spec["module"], spec["varlen"])
            if spec.get("varlen_max_seqlen", True):
                return lambda q, k, v: fa(q, k, v, cu_seqlens_q=cu, cu_seqlens_k=cu, max_seqlen_q=mx,
                                          max_seqlen_k=mx, causal=causal)
            return lambda q, k, v: fa(q, k, v, cu_seqlens_q=cu, cu_seqlens_k=cu, causal=causal)
        if conv == "sage":
            sage = load(spec["module"], spec["varlen"])
            return lambda q, k, v: sage(q, k, v, cu, cu, mx, mx, is_causal=causal)
        if conv == "xformers":
            mea = load(spec["module"], spec["varlen"])
            ab = importlib.import_module("xformers.ops.fmha.attn_bias")
            cls = ab.BlockDiagonalCausalMask if causal else ab.BlockDiagonalMask
            bias = cls.from_seqlens(list(docs) * self.batch)
            return lambda q, k, v: mea(q, k, v, attn_bias=bias)
        if conv == "flex":
            flex_attention = load(spec["module"], spec["varlen"])
            create_block_mask = load(spec["module"], "create_block_mask")
            ids = doc_ids(torch, docs, self.batch, self.seq, self.device).reshape(-1)
            n = ids.numel()

            def mask_mod(b, h, qi, ki):
                same = ids[qi] == ids[ki]
                return same & (qi >= ki) if causal else same

            mask = create_block_mask(mask_mod, None, None, n, n, device=self.device)
            compiled = torch.compile(flex_attention)
            return lambda q, k, v: compiled(q, k, v, block_mask=mask)
        raise NotInstalled(f"{conv} has no packed (varlen) path")


def eager_attention(torch, q, k, v, causal):
    """What transformers' eager attention computes (bhsd): matmul, fp32 softmax, matmul."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale
    if causal:
        s = q.shape[-2]
        keep = torch.ones(s, s, dtype=torch.bool, device=q.device).tril()
        scores = scores.masked_fill(~keep, float("-inf"))
    probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)
    return torch.matmul(probs, v)
