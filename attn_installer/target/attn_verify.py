"""Prove a backend works with real kernel calls, in the user's Python, against fp32 attention.

attn-install runs this file in a fresh ``python -I`` from an empty temporary directory (a checkout
in the working directory cannot shadow the installed package) with a timeout:

    python attn_verify.py '{"backend": "flash_attention_2", "call": {...}, "dtype": "bf16",
                            "cases": [{"name": "causal", "batch": 2, "seq": 512, "heads": 8,
                                       "kv_heads": 8, "head_dim": 128, "causal": true}], ...}'

and reads the one JSON line it prints: status passed / failed / skipped, a detail, and per case
the errors of the output and of dq, dk, dv. It catches the false successes users hit: an import
that works and a kernel that returns garbage, a compiled extension that did not load (the backend
silently falls back), SDPA with no fused kernel (every call runs math), a forward-only kernel.
No GPU: "skipped", never "passed". Runs on Python >= 3.9; imports nothing from attn_installer.
"""

import json
import sys
import warnings

import attn_calls  # its sibling: the boot line (or `python attn_verify.py`) puts this folder on sys.path


def done(out, status, detail, **kw):
    out.update(kw, status=status, detail=detail)
    print(json.dumps(out))
    return 0


def short(e):
    return f"{type(e).__name__}: {e}".splitlines()[0][:300]


def _version_tuple(text):
    parts = []
    for p in str(text).split("+")[0].split(".")[:3]:
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def import_backend(out, spec):
    """Import the backend's module; (ok, warnings to report) or a failure already printed."""
    module = spec.get("module")
    if not module or module.startswith("torch"):
        return True, []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            mod = attn_calls.import_module(module)
    except Exception as e:
        what = f"loading hub kernel {module[4:]}" if module.startswith("hub:") else f"import {module}"
        done(out, "failed", f"{what} failed: " + short(e))
        return False, []
    marker = spec.get("extension_warning")
    bad = [str(w.message) for w in caught if marker and marker in str(w.message)]
    if not bad:
        return True, []
    since = spec.get("extension_optional_from")
    top = sys.modules.get(module.split(".")[0], mod)
    if since and _version_tuple(getattr(top, "__version__", "0")) >= _version_tuple(since):
        return True, [f"the compiled extension did not load; from {since} the attention path does not "
                      "need it, so the kernel check below decides"]
    done(out, "failed", "extension not loaded: " + bad[0][:200])
    return False, []


def run_case(torch, calls, spec, case, dtype, tol, min_cos, alt=None):
    """One case: the backend's output (and dq, dk, dv) against the fp32 reference."""
    b, s, h, kv, d = case["batch"], case["seq"], case["heads"], case["kv_heads"], case["head_dim"]
    causal, docs = case.get("causal", True), case.get("docs")
    backward = case.get("backward", True) and spec.get("backward", True)
    gen = torch.Generator(device="cuda").manual_seed(case.get("seed", 0))
    q = torch.randn(b, s, h, d, device="cuda", dtype=dtype, generator=gen).requires_grad_(backward)
    k = torch.randn(b, s, kv, d, device="cuda", dtype=dtype, generator=gen).requires_grad_(backward)
    v = torch.randn(b, s, kv, d, device="cuda", dtype=dtype, generator=gen).requires_grad_(backward)
    g = torch.randn(b, s, h, d, device="cuda", dtype=dtype, generator=gen)
    ad = calls.Adapter(torch, spec if alt is None else dict(spec, function=alt), causal, h, kv, docs=docs,
                       batch=b, seq=s)
    if docs:
        def pack(t):
            return t.reshape(b * s, t.shape[2], d)
        o = ad.varlen_to_thd(ad.varlen_call(*ad.varlen_native(pack(q), pack(k), pack(v)))).reshape(b, s, h, d)
    else:
        o = ad.to_bshd(ad.call(*ad.native(q, k, v)))
    leaves = [t.detach().float().requires_grad_(backward) for t in (q, k, v)]
    ref = calls.reference(torch, *leaves, causal, docs=docs)
    res = {"name": case.get("name", "case")}
    m = calls.compare(torch, o, ref)
    res.update(out_rel_err=m["rel_err"], out_cosine=m["cosine"])
    ok = m["rel_err"] < tol and m["cosine"] > min_cos
    if backward and ok:
        o.backward(g)
        ref.backward(g.float())
        for name, t, rt in zip("qkv", (q, k, v), leaves):
            gm = calls.compare(torch, t.grad, rt.grad)
            res[f"d{name}_rel_err"], res[f"d{name}_cosine"] = gm["rel_err"], gm["cosine"]
            if not (gm["rel_err"] < tol * 2 and gm["cosine"] > min_cos):
                ok = False
                res.setdefault("wrong", f"d{name}")
    elif not ok:
        res["wrong"] = "output"
    torch.cuda.synchronize()
    res["status"] = "passed" if ok else "failed"
    return ok, res


def sdpa_kernels(torch, calls, spec, case, dtype, tol, min_cos):
    """SDPA forced to each fused kernel: ok, wrong output, or unavailable."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    kernels = {}
    for kname in ("CUDNN_ATTENTION", "FLASH_ATTENTION", "EFFICIENT_ATTENTION"):
        kb = getattr(SDPBackend, kname, None)
        if kb is None:
            continue
        label = kname.split("_")[0].lower()
        try:
            with sdpa_kernel([kb]):
                kok, kres = run_case(torch, calls, spec, case, dtype, tol, min_cos)
            kernels[label] = "ok" if kok else f"wrong output {kres}"
        except RuntimeError as e:
            kernels[label] = f"unavailable: {str(e).splitlines()[0][:120]}"
    return kernels


def main(argv):
    cfg = json.loads(argv[1])
    spec, cases = cfg["call"], cfg["cases"]
    out = {"backend": cfg["backend"], "dtype": cfg["dtype"], "head_dim": cases[0]["head_dim"] if cases else None}
    try:
        import torch
    except Exception as e:
        return done(out, "failed", f"import torch failed: {e}")
    ok, notes = import_backend(out, spec)
    if not ok:
        return 0
    if notes:
        out["warnings"] = notes
    if not torch.cuda.is_available():
        module = spec.get("module")
        imported = f" (import {module} ok)" if module and not module.startswith("torch") else ""
        if module and module.startswith("hub:"):
            imported = f" (hub kernel {module[4:]} loaded from the cache)"
        return done(out, "skipped", "no GPU" + imported)
    calls = attn_calls

    out["torch"] = torch.__version__
    out["gpu"] = torch.cuda.get_device_name(0)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[cfg["dtype"]]
    tol, min_cos = float(cfg["rel_tol"]), float(cfg["min_cosine"])
    results = []
    marker = spec.get("extension_warning")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if spec.get("require_fused"):
                out["sdpa_kernels"] = sdpa_kernels(torch, calls, spec, cases[0], dtype, tol, min_cos)
            for case in cases:
                results.append(run_case(torch, calls, spec, case, dtype, tol, min_cos)[1])
        noise = [str(w.message) for w in caught if marker and marker in str(w.message)]
        if noise and not notes:
            return done(out, "failed", "extension not loaded: " + noise[0][:200], cases=results)
    except Exception as e:
        return done(out, "failed", short(e), cases=results)
    out["cases"] = results
    main_case = results[0]
    out.update({k: v for k, v in main_case.items() if k.endswith(("_rel_err", "_cosine"))})
    failed = [r for r in results if r["status"] != "passed"]
    if spec.get("require_fused") and not any(v == "ok" for v in out.get("sdpa_kernels", {}).values()):
        return done(out, "failed", "SDPA has no fused kernel here: every call falls back to the math kernel")
    if not failed:
        packed = [r for r in results[1:] if r["name"].startswith("varlen")]
        vl = "".join(f"; {spec.get('varlen')} cosine {r['out_cosine']:.5f}" for r in packed)
        return done(out, "passed", f"matches fp32 attention (rel err {main_case['out_rel_err']:.2e}, "
                                   f"cosine {main_case['out_cosine']:.5f}){vl}")
    bad = failed[0]
    rel, cos = bad["out_rel_err"], bad["out_cosine"]
    extra = ""
    if bad is main_case and bad.get("wrong") == "output" and spec.get("alternatives"):
        right = []
        for alt in spec["alternatives"]:
            try:
                if run_case(torch, calls, spec, cases[0], dtype, tol, min_cos, alt=alt)[0]:
                    right.append(alt)
            except Exception:  # noqa: S110 - an alternative that raises is simply not right
                pass
        out["kernels_right"] = right
        if right:
            extra = (f"; {spec['function']}() picks a wrong kernel on this GPU while {', '.join(right)} "
                     "are right (the config would run the wrong one)")
    elif bad is not main_case:
        extra = f" in case {bad['name']}; the plain case passed"
    what = bad.get("wrong", "output")
    if what != "output":
        rel, cos = bad[f"{what}_rel_err"], bad[f"{what}_cosine"]
        return done(out, "failed", f"{what} (gradient) differs from fp32 attention (rel err {rel:.3g}, "
                                   f"cosine {cos:.3g}) in case {bad['name']}")
    return done(out, "failed", f"output differs from fp32 attention (rel err {rel:.3g}, cosine {cos:.3g}){extra}")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
