"""Prove a backend works with real kernel calls, in the user's Python, against fp32 attention.

attn-install runs this file in a fresh ``python -I`` from an empty temporary directory (a checkout
in the working directory cannot shadow the installed package) with a timeout:

    python attn_verify.py '{"backend": "flash_attention_2", "call": {...}, "dtype": "bf16",
                            "cases": [{"name": "gqa causal h8/kv2 d128", "batch": 2, "seq": 256,
                                       "heads": 8, "kv_heads": 2, "head_dim": 128, "causal": true,
                                       "docs": [37, 91, 128]}, ...],
                            "rel_tol": 0.02, "min_cosine": 0.999, "build_dists": ["flash-attn", "torch"]}'

and reads the one JSON line it prints: status passed / failed / skipped, a detail, the digest of
the build checked ("build", attn_builds.py), and per case (each in its own try, so a failure names
its case) the errors of the output and of dq, dk, dv and the GPU kernels the call ran (profiler;
for SDPA which of its kernels). ``docs`` makes a case packed: the varlen (cu_seqlens) entry point
over documents of those lengths in every row; ``head_dim_v`` a V head dim of its own (MLA).
It catches the false successes users hit: an import that works and a kernel that returns garbage,
a compiled extension that did not load (the backend silently falls back), SDPA with no fused kernel
(every call runs math), a forward-only kernel, a backward wrong only for GQA or only when packed.
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


def run_case(torch, calls, spec, case, dtype, tol, min_cos, alt=None, kernel=False):
    """One case: the backend's output (and dq, dk, dv) against the fp32 reference; with *kernel*,
    also which GPU kernel the call ran (torch.profiler; SDPA: which of its kernels)."""
    b, s, h, kv, d = case["batch"], case["seq"], case["heads"], case["kv_heads"], case["head_dim"]
    dv = case.get("head_dim_v") or d
    causal, docs = case.get("causal", True), case.get("docs")
    backward = case.get("backward", True) and spec.get("backward", True)
    gen = torch.Generator(device="cuda").manual_seed(case.get("seed", 0))
    q = torch.randn(b, s, h, d, device="cuda", dtype=dtype, generator=gen).requires_grad_(backward)
    k = torch.randn(b, s, kv, d, device="cuda", dtype=dtype, generator=gen).requires_grad_(backward)
    v = torch.randn(b, s, kv, dv, device="cuda", dtype=dtype, generator=gen).requires_grad_(backward)
    g = torch.randn(b, s, h, dv, device="cuda", dtype=dtype, generator=gen)
    ad = calls.Adapter(torch, spec if alt is None else dict(spec, function=alt), causal, h, kv, docs=docs,
                       batch=b, seq=s)
    if docs:
        def pack(t):
            return t.reshape(b * s, t.shape[2], t.shape[3])

        def forward():
            return ad.varlen_to_thd(ad.varlen_call(*ad.varlen_native(pack(q), pack(k), pack(v)))).reshape(b, s, h, dv)
    else:
        def forward():
            return ad.to_bshd(ad.call(*ad.native(q, k, v)))
    o = forward()
    res = {"name": case.get("name", "case")}
    if kernel:
        try:  # with grad enabled like the call above: a compiled backend (flex) is not compiled again
            names, kernels = calls.ran_kernels(torch, forward)
            if spec.get("convention") == "sdpa":
                res["kernel"] = calls.classify_kernel(names)
            res["kernels"] = [n[:120] for n in kernels[:3]]
        except Exception as e:
            res["kernel_detail"] = short(e)
    if tuple(o.shape) != (b, s, h, dv):
        res.update(status="failed", wrong="output", error=f"output shape {tuple(o.shape)}, expected {(b, s, h, dv)}")
        return False, res
    leaves = [t.detach().float().requires_grad_(backward) for t in (q, k, v)]
    ref = calls.reference(torch, *leaves, causal, docs=docs)
    m = calls.compare(torch, o, ref)
    res.update(out_rel_err=m["rel_err"], out_cosine=m["cosine"])
    ok = m["rel_err"] < tol and m["cosine"] > min_cos
    if backward and ok:
        o.backward(g)
        ref.backward(g.float())
        for name, t, rt in zip("qkv", (q, k, v), leaves):
            if t.grad is None or tuple(t.grad.shape) != tuple(t.shape):
                got = None if t.grad is None else tuple(t.grad.shape)
                res.setdefault("wrong", f"d{name}")
                res.setdefault("error", f"d{name} shape {got}, expected {tuple(t.shape)}")
                ok = False
                continue
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


def allow_recompiles(torch, n):
    """Every case of a compiled backend (flex) is a new shape or mask for torch.compile; past
    dynamo's recompile limit (8) it would run the uncompiled reference path and verify nothing of the
    kernel training runs."""
    try:
        import torch._dynamo as dynamo

        for name in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit",
                     "accumulated_cache_size_limit"):
            if hasattr(dynamo.config, name):
                setattr(dynamo.config, name, max(int(getattr(dynamo.config, name)), n))
    except Exception:  # noqa: S110 - an older torch without these knobs compiles as it does
        pass


def run_cases(torch, calls, spec, cases, dtype, tol, min_cos):
    """Every case in its own try: one that raises fails with its error, the others still run."""
    results = []
    for case in cases:
        try:
            results.append(run_case(torch, calls, spec, case, dtype, tol, min_cos, kernel=True)[1])
        except Exception as e:
            results.append({"name": case.get("name", "case"), "status": "failed", "wrong": "error",
                            "error": short(e)})
        finally:
            torch.cuda.empty_cache()
    return results


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
    props = torch.cuda.get_device_properties(0)
    out["capability"] = f"{props.major}.{props.minor}"
    if cfg.get("build_dists"):
        try:
            import attn_builds

            out["build"] = attn_builds.build_digest(cfg["build_dists"])
        except Exception as e:  # the digest labels the record; without it nothing is recorded
            out["build_detail"] = short(e)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[cfg["dtype"]]
    tol, min_cos = float(cfg["rel_tol"]), float(cfg["min_cosine"])
    if spec.get("convention") == "flex":
        allow_recompiles(torch, 4 * len(cases) + 8)
    results = []
    marker = spec.get("extension_warning")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if spec.get("require_fused"):
                out["sdpa_kernels"] = sdpa_kernels(torch, calls, spec, cases[0], dtype, tol, min_cos)
            results = run_cases(torch, calls, spec, cases, dtype, tol, min_cos)
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
        worst = max(r.get("out_rel_err", 0.0) for r in results)
        return done(out, "passed", f"{len(results)} cases match fp32 attention (worst output rel err {worst:.2e}; "
                                   f"tolerance rel err < {tol:g}, cosine > {min_cos:g}, "
                                   + (f"gradients rel err < {2 * tol:g})" if spec.get("backward", True)
                                      else "forward only: the kernel has no backward)"))
    bad = failed[0]
    if bad.get("wrong") == "error" or "out_rel_err" not in bad:
        return done(out, "failed", f"case {bad['name']} failed: {bad.get('error', 'no result')}"
                                   + (f" ({len(failed)} of {len(results)} cases failed)" if len(failed) > 1 else ""))
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
        extra = f"; the first case ({main_case['name']}) passed"
    what = bad.get("wrong", "output")
    if what != "output":
        if f"{what}_rel_err" not in bad:
            return done(out, "failed", f"{what} (gradient) is wrong in case {bad['name']}: {bad.get('error', '')}")
        rel, cos = bad[f"{what}_rel_err"], bad[f"{what}_cosine"]
        return done(out, "failed", f"{what} (gradient) differs from fp32 attention (rel err {rel:.3g}, "
                                   f"cosine {cos:.3g}) in case {bad['name']}")
    return done(out, "failed", f"output differs from fp32 attention (rel err {rel:.3g}, cosine {cos:.3g}) "
                               f"in case {bad['name']}{extra}")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
