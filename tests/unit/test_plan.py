"""Plans over a table of machines: viability, reasons, recommendation, steps and config."""

from __future__ import annotations

import pytest

from attn_installer.errors import UsageError
from attn_installer.matrix import load_matrix
from attn_installer.resolve import covered_by
from tests.conftest import validate
from tests.machines import MACHINES, planned


def plan(name, **kw):
    return planned(MACHINES[name], cache_dir="/cache", **kw)


def viable(p):
    return {b.name for b in p.backends if b.viable}


@pytest.mark.parametrize("name", sorted(MACHINES))
def test_every_plan_matches_the_contract(name):
    p = plan(name)
    validate(p.to_dict(), "plan.schema.json")
    assert {b.name for b in p.backends} == set(load_matrix().backend_names)
    for b in p.backends:
        assert b.reasons
        for s in b.steps:
            assert not any(a.startswith(("torch>", "torch<", "--upgrade", "-U")) for a in s.argv)
            if s.installs is not None and MACHINES[name].torch is not None:
                path = s.argv[s.argv.index("--constraint") + 1]
                assert f"torch=={MACHINES[name].torch.version}\n" in s.writes[path], s.argv


def test_colab_t4_gets_xformers_fp16_no_fa2():
    p = plan("colab_t4")
    assert p.recommended == "xformers"
    assert p.config == {"attn_implementation": "xformers", "bf16": False, "fp16": True,
                        "sample_packing": True, "pad_to_sequence_len": True}
    fa2 = p.backend("flash_attention_2")
    assert not fa2.viable and "sm_75" in fa2.reason_texts[0] and "SM >=80" in fa2.reason_texts[0]
    (step,) = p.backend("xformers").steps
    assert "xformers==0.0.32.post2" in step.argv
    assert "https://download.pytorch.org/whl/cu126" in step.argv
    (pins,) = step.writes.values()
    assert {"torch==2.8.0+cu126", "torchvision==0.23.0+cu126", "triton==3.4.0"} <= set(pins.split())


def test_a100_gets_fa2_release_wheel():
    p = plan("a100")
    assert p.recommended == "flash_attention_2"
    fa2 = p.backend("flash_attention_2")
    assert fa2.method == "wheel"
    assert fa2.download["filename"] == "flash_attn-2.8.3+cu12torch2.8cxx11abiTRUE-cp311-cp311-linux_x86_64.whl"
    assert fa2.download["url"].startswith("https://github.com/Dao-AILab/flash-attention/releases/download/v2.8.3/")
    assert p.config["attn_implementation"] == "flash_attention_2" and p.config["bf16"] is True
    assert p.config["sample_packing"] is True


def test_fa2_wheel_needs_glibc():
    from dataclasses import replace

    f = MACHINES["a100"]
    old = replace(f, host=replace(f.host, glibc="2.28"))
    p = planned(old)
    fa2 = p.backend("flash_attention_2")
    assert fa2.method == "source"  # no wheel fits glibc 2.28: a source build is the way
    from attn_installer.routes import find_flash_attn_wheel

    wheel, why = find_flash_attn_wheel(old, load_matrix())
    assert wheel is None and why[0] == "2.8.3: the release wheels need glibc >= 2.32; this system has 2.28"


def test_h100_recommends_sdpa_and_names_fa3_source_build():
    p = plan("h100")
    # Hopper's measured order is FA3 > SDPA > FA2; FA3 needs a source build here, so SDPA is next
    assert p.recommended == "sdpa" and p.backend("flash_attention_2").method == "wheel"
    assert p.backend("flash_attention_3").viable and p.backend("flash_attention_3").method == "source"
    assert any("flash_attention_3 ranks first" in w and "--allow-source" in w for w in p.warnings)


def test_h200_torch211_fa3_trimmed_build_env():
    p = plan("h200_torch211", route="source", head_dims=(128,), dtypes=("bf16",), backend="flash_attention_3")
    assert p.recommended == "flash_attention_3"
    fa3 = p.backend("flash_attention_3")
    build = next(s for s in fa3.steps if s.kind == "build")
    env = build.env
    # one arch: NVCC_THREADS only splits gencode targets, so one thread per job: int(64 GB * 0.8 / 5 GB)
    assert env["MAX_JOBS"] == "10" and env["NVCC_THREADS"] == "1"
    for flag in ("HDIM64", "HDIM96", "HDIM192", "HDIM256", "FP16", "FP8", "SM80", "SPLIT", "PAGEDKV"):
        assert env[f"FLASH_ATTENTION_DISABLE_{flag}"] == "TRUE"
    assert "FLASH_ATTENTION_DISABLE_HDIM128" not in env and "FLASH_ATTENTION_DISABLE_BACKWARD" not in env
    assert env["CPLUS_INCLUDE_PATH"] == "/usr/local/cuda/include/cccl"
    assert env["FLASH_ATTENTION_OFFLINE_BUILD"] == "TRUE"
    assert build.argv[1:6] == ("-m", "pip", "wheel", "--verbose", "--no-build-isolation")
    assert build.argv[-1].endswith("/hopper")
    assert fa3.estimate_minutes is not None and fa3.estimate_minutes < 5
    # without --head-dim/--dtype the same build is the full 73-unit one (sm90 only)
    untrimmed = plan("h200_torch211", route="source").backend("flash_attention_3")
    assert untrimmed.estimate_minutes > 10 * fa3.estimate_minutes / 2


def test_h200_torch211_gets_fa3_from_the_pytorch_index_and_fa2_from_the_farm():
    p = plan("h200_torch211")
    assert p.recommended == "flash_attention_3"  # no --allow-source needed: a prebuilt route fits
    fa3 = p.backend("flash_attention_3")
    assert (fa3.method, fa3.route) == ("pypi", "torch_index")
    wheel, deps = fa3.steps
    assert wheel.argv[-3:] == ("flash-attn-3==3.0.0", "--index-url", "https://download.pytorch.org/whl/cu130")
    assert "--no-deps" in wheel.argv  # nothing else is resolved on the PyTorch index
    assert deps.argv[-3:] == ("einops", "packaging", "ninja") and "--index-url" not in deps.argv
    assert [r.route for r in fa3.candidates] == ["torch_index", "wheel_farm", "hub_kernel", "source"]
    fa2 = p.backend("flash_attention_2")
    assert (fa2.method, fa2.route) == ("wheel", "wheel_farm")  # no official wheel for torch 2.11
    assert fa2.download["url"] == ("https://github.com/mjun0812/flash-attention-prebuild-wheels/releases/download/"
                                   "v0.9.4/flash_attn-2.8.3+cu130torch2.11-cp311-cp311-linux_x86_64.whl")
    assert [r.route for r in fa2.candidates] == ["wheel_farm", "hub_kernel", "source"]
    only = plan("h200_torch211", route="wheel_farm").backend("flash_attention_3")
    assert only.route == "wheel_farm" and only.alternatives == ()
    assert plan("h200_torch211", no_source=True).backend("flash_attention_2").candidates[-1].route == "hub_kernel"


def test_hub_kernel_route_fetches_with_the_loader_and_names_the_path_axolotl_takes():
    from attn_installer import target

    hub = plan("h200_torch211", route="hub_kernel")
    assert hub.recommended == "flash_attention_3"
    fa3 = hub.backend("flash_attention_3")
    assert (fa3.method, fa3.route, dict(fa3.hub)) == ("wheel", "hub_kernel",
                                                      {"repo": "kernels-community/flash-attn3", "version": 1})
    loader, fetch = fa3.steps
    assert loader.argv[-1:] == ("kernels",) and "--constraint" in loader.argv  # torch pinned
    assert fetch.argv[:4] == ("/env/bin/python", "-I", "-c", target.BOOT)
    assert fetch.argv[5:] == ("attn_hubfetch", "kernels-community/flash-attn3", "1")
    # axolotl unknown or >= 0.21: the path with the version branch (the commit once installed), packing kept
    assert hub.config["attn_implementation"] == "kernels-community/flash-attn3@v1" and hub.config["sample_packing"]
    old = plan("h200_torch211", route="hub_kernel", axolotl_version="0.19.0")
    assert old.config["attn_implementation"] == "kernels-community/flash-attn3" and "sample_packing" not in old.config
    legacy = plan("h200_torch211", route="hub_kernel", axolotl_version="0.16.1")
    assert any("cannot take a hub kernel" in w for w in legacy.backend("flash_attention_3").warnings)
    # CUDA 13.2 is past the kernel's maxver; torch 2.8 before its stable ABI
    from dataclasses import replace

    f = MACHINES["h200_torch211"]
    cu132 = replace(f, torch=replace(f.torch, version="2.11.0+cu132", cuda="13.2"))
    assert "is built for CUDA <13.1,>=12.6, torch has 13.2" in " ".join(
        planned(cu132, route="hub_kernel").backend("flash_attention_3").reason_texts)


def test_a_pytorch_index_mirror_is_used_for_the_index_route():
    p = plan("h200_torch211", torch_index="http://mirror.example/pt/{flavour}")
    assert p.backend("flash_attention_3").steps[0].argv[-1] == "http://mirror.example/pt/cu130"


def test_fa3_index_wheel_for_a_cu132_torch_takes_the_cu130_build():
    from dataclasses import replace

    f = MACHINES["h200_torch211"]
    t = replace(f.torch, version="2.14.1+cu132", cuda="13.2")
    fa3 = planned(replace(f, torch=t, packages={"torch": t.version})).backend("flash_attention_3")
    assert fa3.route == "torch_index" and fa3.steps[0].argv[-1].endswith("/whl/cu130")


def test_fa4_trains_on_hopper_but_needs_the_cuda_12_9_driver():
    from dataclasses import replace

    from attn_installer.facts import Driver

    f = MACHINES["h200_torch211"]
    assert planned(f).backend("flash_attention_4").viable  # sm_90 training: the Hopper backward exists
    # a cu128 torch runs on driver 570, FA4's CuTe DSL kernels need the CUDA 12.9 driver
    old = replace(f, driver=Driver("nvidia", "570.86.15", cuda="12.8"),
                  torch=replace(f.torch, version="2.8.0+cu128", cuda="12.8"))
    fa4 = planned(old).backend("flash_attention_4")
    assert not fa4.viable and "needs driver >= 575.51.03 at run time" in " ".join(fa4.reason_texts)


def test_fa2_source_build_is_the_post2_sdist_with_families():
    from dataclasses import replace

    f = MACHINES["h200_torch211"]
    mixed = replace(f, gpus=(*f.gpus, replace(f.gpus[0], index=1, name="NVIDIA L40S", arch="sm_89")))
    fa2 = planned(mixed, route="source", backend="flash_attention_2").backend("flash_attention_2")
    fetch = [s for s in fa2.steps if s.kind == "fetch"]
    assert fetch[1].need.url.endswith("/flash_attn-2.8.3.post2.tar.gz") and fetch[1].need.sha256.startswith("d0f9f0b0")
    build = next(s for s in fa2.steps if s.kind == "build")
    # sm_89 builds as FA2's 80 family (an unknown value would be dropped); two archs: threads split them
    assert build.env["FLASH_ATTN_CUDA_ARCHS"] == "90;80" and build.env["NVCC_THREADS"] == "4"


def test_rtx4090_fa2_wheel_and_sage_for_lora():
    p = plan("rtx4090")
    assert p.recommended == "flash_attention_2"
    assert p.backend("flash_attention_2").download["filename"].startswith("flash_attn-2.8.3+cu12torch2.7")
    sage = p.backend("sage")
    assert not sage.viable and "full" in sage.reason_texts[0]
    lora = plan("rtx4090", workload="lora")
    assert lora.backend("sage").viable is False  # no nvcc on that machine: no source build
    assert any("nvcc not found" in r for r in lora.backend("sage").reason_texts)


def test_rtx5090_cu128_fa2_wheel_and_blackwell():
    p = plan("rtx5090")
    assert p.recommended == "flash_attention_2"
    assert p.blockers == ()


def test_rtx5090_with_cu126_torch_is_blocked():
    p = plan("rtx5090_cu126")
    assert p.recommended is None
    assert "no kernels for GPU 0 (NVIDIA GeForce RTX 5090, sm_120)" in p.blockers[0]
    assert "cu128" in p.blockers[0]
    assert all(not b.viable for b in p.backends)


def test_b200():
    p = plan("b200")
    assert p.recommended == "flash_attention_2"
    assert p.backend("flash_attention_4").viable
    assert not p.backend("flash_attention_3").viable


def test_v100_with_cu128_torch_211_is_blocked_and_cu126_works():
    p = plan("v100_cu128_211")
    assert p.recommended is None
    assert "sm_70" in p.blockers[0] and "cu126" in p.blockers[0]
    ok = plan("v100_cu126")
    assert ok.recommended == "sdpa"
    assert ok.config["fp16"] is True and ok.config["bf16"] is False
    assert not ok.backend("xformers").viable  # V100 dropped by xformers >= 0.0.31; 2.7.1 needs 0.0.31


def test_mi300x():
    p = plan("mi300x")
    assert p.recommended == "sdpa"
    ck = p.backend("flash_attention_2_rocm")
    assert ck.viable and ck.method == "source"
    build = next(s for s in ck.steps if s.kind == "build")
    assert build.env["GPU_ARCHS"] == "gfx942"
    assert not p.backend("flash_attention_2").viable
    allowed = plan("mi300x", allow_source=True)
    assert allowed.recommended == "flash_attention_2_rocm"
    assert allowed.config["attn_implementation"] == "flash_attention_2"


def test_rx7900xtx_triton_backend_runtime_env():
    p = plan("rx7900xtx", backend="flash_attention_2_rocm_triton")
    assert p.recommended == "flash_attention_2_rocm_triton"
    assert p.runtime_env == {"FLASH_ATTENTION_TRITON_AMD_ENABLE": "TRUE"}
    assert not p.backend("flash_attention_2_rocm").viable
    build = next(s for s in p.backend("flash_attention_2_rocm_triton").steps if s.kind == "build")
    assert build.env["FLASH_ATTENTION_TRITON_AMD_ENABLE"] == "TRUE"


def test_cpu_only():
    p = plan("cpu_only")
    assert p.recommended == "sdpa"
    assert p.config == {"attn_implementation": "sdpa"}
    assert "needs a GPU" in p.backend("flash_attention_2").reason_texts[0]


def test_no_torch_is_a_blocker():
    p = plan("no_torch")
    assert p.recommended is None
    assert p.blockers and "torch is not installed" in p.blockers[0]
    assert all(b.steps == () for b in p.backends)


def test_windows():
    p = plan("windows_4090")
    assert p.recommended == "sdpa"
    assert "windows" in p.backend("flash_attention_2").reason_texts[0]


def test_mixed_gpus_fit_every_gpu():
    p = plan("mixed_a100_t4")
    assert p.recommended == "xformers"  # the T4 decides: the Turing ranking, and xformers fits both
    assert p.config["fp16"] is True  # the T4 has no bf16
    fa2 = p.backend("flash_attention_2")
    assert not fa2.viable and "GPU 1 (Tesla T4, sm_75)" in fa2.reason_texts[0]
    assert any("CUDA_VISIBLE_DEVICES=0" in w for w in p.warnings)


def test_old_driver_blocks():
    p = plan("old_driver")
    assert p.recommended is None
    assert "470.82.01 is too old" in p.blockers[0] and "525.60.13" in p.blockers[0]


@pytest.mark.parametrize(("axolotl", "expected"), [
    ("0.21.0", {"attn_implementation": "flash_attention_2"}),
    ("0.17.0", {"attn_implementation": "flash_attention_2"}),
    ("0.16.1", {"flash_attention": True}),
    ("0.8.0", {"flash_attention": True}),
])
def test_config_keys_follow_axolotl(axolotl, expected):
    p = plan("a100", axolotl_version=axolotl)
    keys = {k: v for k, v in p.config.items() if k in ("attn_implementation", "flash_attention")}
    assert keys == expected


def test_flex_writes_torch_compile_and_old_axolotl_uses_flag():
    p = plan("h100", backend="flex_attention", axolotl_version="0.10.0")
    assert p.config["flex_attention"] is True and p.config["torch_compile"] is True
    assert "attn_implementation" not in p.config


def test_sage_lora_config_comment():
    from dataclasses import replace

    f = replace(MACHINES["rtx4090"], toolkit=MACHINES["a100"].toolkit, torch=MACHINES["a100"].torch,
                packages={"torch": "2.8.0+cu128"})
    p = planned(f, workload="lora", backend="sage")
    assert p.recommended == "sage"
    assert p.config["attn_implementation"] == "sage" and p.config["pad_to_sequence_len"] is True
    assert any("LoRA" in c for c in p.config_comments)
    build = next(s for s in p.backend("sage").steps if s.kind == "build")
    assert build.env["TORCH_CUDA_ARCH_LIST"] == "8.9" and build.env["EXT_PARALLEL"] == "1"


def test_memory_limit_bounds_max_jobs():
    from dataclasses import replace

    f = MACHINES["h200_torch211"]
    small = replace(f, host=replace(f.host, memory_gb=12.0, cpu_count=64))
    env = next(s for s in planned(small, route="source", backend="flash_attention_3")
               .backend("flash_attention_3").steps if s.kind == "build").env
    assert env["MAX_JOBS"] == "1" and env["NVCC_THREADS"] == "1"  # 12 GB * 0.8 fits one 5 GB thread
    tiny = replace(f, host=replace(f.host, memory_gb=4.0))
    fa3 = planned(tiny, route="source").backend("flash_attention_3")
    assert not fa3.viable and "one compile job needs about 5 GB" in fa3.reason_texts[-1]


def test_target_arch_builds_without_gpu():
    from dataclasses import replace

    f = replace(MACHINES["h200_torch211"], gpus=(), driver=None)
    p = planned(f, backend="sage", workload="lora", target_archs=("sm_89",))
    # a build host without a GPU cannot use sage itself: it does not fit, for lack of a GPU
    sage = p.backend("sage")
    assert not sage.viable and sage.reason_texts == ("sage needs a GPU; none is visible to this process",)
    # with the GPU there (nvcc present), the build targets sm_89 as asked, not the GPU present
    with_gpu = planned(MACHINES["h200_torch211"], backend="sage", workload="lora", target_archs=("sm_89",))
    build = next(s for s in with_gpu.backend("sage").steps if s.kind == "build")
    assert build.env["TORCH_CUDA_ARCH_LIST"] == "8.9" and build.description.endswith("for sm_89")


def test_unknown_backend_and_workload():
    with pytest.raises(UsageError, match="unknown backend 'flash'"):
        plan("a100", backend="flash")
    with pytest.raises(UsageError, match="unknown workload"):
        plan("a100", workload="pretrain")


@pytest.mark.parametrize(("gpu", "archs", "ok"), [
    ("sm_89", ("sm_80", "sm_86"), True), ("sm_90", ("sm_80", "sm_86"), False),
    ("sm_120", ("sm_90", "compute_90"), True), ("sm_103", ("sm_100",), True), ("sm_70", ("sm_75",), False),
])
def test_arch_coverage(gpu, archs, ok):
    assert covered_by(gpu, archs) is ok


@pytest.mark.parametrize(("nvcc", "gcc", "expect"), [
    ("13.0", "13.3.0", None),  # the device H200: accepted
    ("12.6", "14.2.0", "host gcc 14.2.0 is newer than nvcc 12.6 accepts (gcc <= 13: nvcc stops with "
                       "'unsupported GNU version'): install gcc-13 and build with CC=gcc-13 CXX=g++-13, "
                       "or use CUDA toolkit >= 12.8 (it accepts gcc 14)"),
    ("13.0", "16.1.0", "host gcc 16.1.0 is newer than nvcc 13.0 accepts (gcc <= 15"),
    ("12.8", "16.1.0", "install gcc-14 and build with CC=gcc-14 CXX=g++-14;"),  # no CUDA 12 takes gcc 16
    ("13.0", "6.5.0", "host gcc 6.5.0 is older than nvcc 13.0 needs (gcc >= 7)"),
    ("13.0", None, None),  # gcc unknown: not guessed at
])
def test_host_gcc_against_nvcc_before_any_build(nvcc, gcc, expect):
    import dataclasses

    h200 = MACHINES["h200_torch211"]
    major = nvcc.split(".")[0]
    t = dataclasses.replace(h200.torch, version=f"2.11.0+cu{major}0", cuda=f"{major}.0")
    f = dataclasses.replace(h200, torch=t, toolkit=dataclasses.replace(h200.toolkit, nvcc=nvcc, gcc=gcc))
    sage = planned(f, cache_dir="/cache", workload="lora").backend("sage")
    if expect is None:
        assert sage.viable and sage.method == "source"
    else:
        assert not sage.viable
        why = sage.reason_texts[-1] + ";"
        assert expect in why and "source build impossible: host gcc" in why


def test_no_ninja_installs_it_from_pypi_before_the_build():
    import dataclasses

    h200 = MACHINES["h200_torch211"]
    f = dataclasses.replace(h200, toolkit=dataclasses.replace(h200.toolkit, ninja=None))
    sage = planned(f, cache_dir="/cache", workload="lora").backend("sage")
    kinds = [(s.kind, s.description) for s in sage.steps]
    ninja = kinds.index(("prepare", "install ninja (parallel compile)"))
    assert ninja < [k for k, _ in kinds].index("build")
    assert "ninja" in sage.steps[ninja].argv and any("ninja not found" in w for w in sage.warnings)


def test_sage_on_the_device_h200_exact_steps():
    """The plan that built SageAttention on the H200 (tests/fixtures/nvidia/h200-device/sage-build.log):
    fetched by commit id, all four extensions at once because MAX_JOBS covers every unit."""
    from attn_installer.facts import load_facts
    from tests.conftest import FIXTURES

    facts = load_facts(FIXTURES / "nvidia/h200-device/probe.json")
    sage = planned(facts, cache_dir="/c", workload="lora").backend("sage")
    ref = load_matrix().source_for("sage").ref
    argv = [s.argv for s in sage.steps]
    assert argv[:3] == [("git", "init", "-q", f"/c/src/sage-{ref[:12]}"),
                        ("git", "-C", f"/c/src/sage-{ref[:12]}", "fetch", "-q", "--depth", "1",
                         "https://github.com/thu-ml/SageAttention.git", ref),
                        ("git", "-C", f"/c/src/sage-{ref[:12]}", "checkout", "-q", "--detach", "FETCH_HEAD")]
    build = next(s for s in sage.steps if s.kind == "build")
    assert build.env == {"CUDA_HOME": "/usr/local/cuda", "EXT_PARALLEL": "4", "MAX_JOBS": "16",
                         "NVCC_THREADS": "1", "TORCH_CUDA_ARCH_LIST": "9.0"}
    assert sage.compile_units == 14 and sage.disk_gb == 1.0 and sage.estimate_minutes == 4.2
    assert sage.steps[-1].argv[-1] == "--force-reinstall"  # a rebuilt same-version wheel replaces the old
    assert "sageattn_qk_int8_pv_fp8_cuda_sm90" in sage.reason_texts[0]


def test_sage_jobs_count_its_own_nvcc_threads_per_arch():
    """SageAttention passes --threads=8 to nvcc itself: three archs = three targets per job at once,
    so MAX_JOBS shrinks and the extensions no longer all build together."""
    from attn_installer.facts import load_facts
    from tests.conftest import FIXTURES

    facts = load_facts(FIXTURES / "nvidia/h200-device/probe.json")

    def build_env(*archs):
        p = planned(facts, cache_dir="/c", workload="lora", target_archs=archs)
        return next(s for s in p.backend("sage").steps if s.kind == "build").env

    one, three = build_env("sm_90"), build_env("sm_80", "sm_89", "sm_90")
    assert (one["MAX_JOBS"], one["EXT_PARALLEL"]) == ("16", "4")
    assert (three["MAX_JOBS"], three["EXT_PARALLEL"]) == ("6", "1")  # 125.9 GB x 0.8 / (3 x 5 GB)
    assert three["TORCH_CUDA_ARCH_LIST"] == "8.0;8.9;9.0"


@pytest.mark.parametrize(("axolotl", "gpu", "warned"), [
    ("0.21.0", "h200_torch211", True),
    (None, "h200_torch211", True),      # axolotl unknown: said with the version range
    ("0.18.0", "h200_torch211", False),  # before the swap
    ("0.21.0", "a100", False),           # sm_80: axolotl keeps FA2
])
def test_axolotl_fa4_swap_is_said_when_flash_attn_4_is_installed(axolotl, gpu, warned):
    from dataclasses import replace

    f = MACHINES[gpu]
    f = replace(f, packages={**f.packages, "flash-attn-4": "4.0.0b36"})
    p = planned(f, backend="flash_attention_2", axolotl_version=axolotl)
    said = [w for w in p.warnings if "runs flash_attention_4 instead of flash_attention_2" in w]
    assert bool(said) == warned
    if warned:
        assert "flash-attn-4 4.0.0b36 is installed" in said[0] and "attn-install verify flash_attention_4" in said[0]
        assert any("runs flash_attention_4" in c for c in p.config_comments)
    plain = planned(MACHINES[gpu], backend="flash_attention_2", axolotl_version=axolotl)
    assert not any("instead of" in w for w in plain.warnings)


def test_transformers_hub_fallback_is_said_with_whether_the_node_reaches_the_hub():
    from dataclasses import replace

    from attn_installer.facts import HubReach

    f = MACHINES["h200_torch211"]
    with_kernels = replace(f, packages={**f.packages, "transformers": "5.20.1", "kernels": "0.17.2"})
    off = replace(with_kernels, hub=HubReach("https://huggingface.co", False, "no answer within 3 s"))
    (w,) = [x for x in plan_facts_warnings(off) if "loads a hub kernel" in x]
    assert "flash_attention_2 -> kernels-community/flash-attn2" in w
    assert "flash_attention_3 -> kernels-community/vllm-flash-attn3" in w
    assert "does NOT reach https://huggingface.co (no answer within 3 s): such a run fails at model load" in w
    on = replace(with_kernels, hub=HubReach("https://hf-mirror.example", True, "HTTP 200"))
    assert any("reaches https://hf-mirror.example (HTTP 200), so it downloads there" in x
               for x in plan_facts_warnings(on))
    # FA2's package installed: only the others fall back; transformers 4.x or no kernels: nothing
    fa2 = replace(off, packages={**off.packages, "flash-attn": "2.8.3"})
    (w2,) = [x for x in plan_facts_warnings(fa2) if "loads a hub kernel" in x]
    assert "flash_attention_2 ->" not in w2 and "flash_attention_3 ->" in w2
    old = replace(off, packages={**off.packages, "transformers": "4.57.1"})
    assert not any("loads a hub kernel" in x for x in plan_facts_warnings(old))


def plan_facts_warnings(f):
    return planned(f).warnings


def test_probe_hub_asks_only_where_it_matters():
    from attn_installer.probe.hub import probe_hub

    asked: list[str] = []

    def head(url, timeout):
        asked.append(url)
        return 401

    assert probe_hub({}, {"transformers": "4.57.1", "kernels": "0.17.2"}, head) is None and asked == []
    r = probe_hub({"HF_ENDPOINT": "http://127.0.0.1:9"}, {"transformers": "5.20.1", "kernels": "0.17.2"}, head)
    assert (r.endpoint, r.reachable, r.detail) == ("http://127.0.0.1:9", True, "HTTP 401")
    assert asked == ["http://127.0.0.1:9/api/whoami-v2"]
    off = probe_hub({"HF_HUB_OFFLINE": "1"}, {"transformers": "5.1.0", "kernels": "0.17.2"}, head)
    assert not off.reachable and off.detail == "HF_HUB_OFFLINE is set" and len(asked) == 1
    none = probe_hub({}, {"transformers": "5.1.0", "kernels": "0.17.2"}, lambda u, t: None)
    assert not none.reachable and none.detail.startswith("no answer within 3 s")


def test_fa3_source_is_the_3_0_0_commit_with_its_cutlass_and_trims_the_hdimdiff_kernels():
    p = plan("h200_torch211", route="source", backend="flash_attention_3", head_dims=(128,), dtypes=("bf16",))
    steps = p.backend("flash_attention_3").steps
    fetch = [" ".join(s.argv) for s in steps if s.kind == "fetch"]
    assert any("fetch -q --depth 1 https://github.com/Dao-AILab/flash-attention.git "
               "e2743ab5b3803bb672b16437ba98a3b1d4576c50" in f for f in fetch)
    assert fetch[-1].endswith("submodule update --init --depth 1 csrc/cutlass")  # the commit's cutlass too
    env = next(s for s in steps if s.kind == "build").env
    assert env["FLASH_ATTENTION_DISABLE_HDIMDIFF64"] == env["FLASH_ATTENTION_DISABLE_HDIMDIFF192"] == "TRUE"
    deepseek = plan("h200_torch211", route="source", backend="flash_attention_3", head_dims=(192, 128))
    env = next(s for s in deepseek.backend("flash_attention_3").steps if s.kind == "build").env
    assert "FLASH_ATTENTION_DISABLE_HDIMDIFF192" not in env and env["FLASH_ATTENTION_DISABLE_HDIMDIFF64"] == "TRUE"


def test_fa2_release_rows_follow_their_build_matrices():
    """upstream-facts 1.1: 2.8.2 has no torch 2.8 wheels, 2.8.3 skips torch 2.4 x cp313, and wheels
    before 2.8.0 carry no Blackwell kernels."""
    from dataclasses import replace

    from attn_installer.matrix import load_matrix
    from attn_installer.routes import find_flash_attn_wheel

    m = load_matrix()
    a100 = MACHINES["a100"]
    t24 = replace(a100, torch=replace(a100.torch, version="2.4.1+cu124", cuda="12.4"),
                  python=replace(a100.python, version="3.13.1"))
    wheel, _ = find_flash_attn_wheel(t24, m)
    assert wheel is not None and wheel.release == "2.8.2"  # 2.8.3 has no torch 2.4 x cp313 wheel
    t23 = replace(MACHINES["rtx5090"], torch=replace(a100.torch, version="2.3.1+cu121", cuda="12.1"),
                  python=replace(a100.python, version="3.11.9"))
    wheel, why = find_flash_attn_wheel(t23, m)
    assert wheel is None and any("2.7.4.post1: its wheels carry kernels for sm_80, sm_90, not sm_120" in w
                                 for w in why)
    t28 = replace(a100, python=replace(a100.python, version="3.13.1"))  # torch 2.8: only 2.8.3 built it
    wheel, _ = find_flash_attn_wheel(t28, m)
    assert wheel is not None and wheel.release == "2.8.3"
    no_28 = replace(m, flash_attn_releases=tuple(r for r in m.flash_attn_releases if str(r.version) != "2.8.3"))
    wheel, why = find_flash_attn_wheel(t28, no_28)
    assert wheel is None and any(w.startswith("2.8.2: no wheel for torch 2.8") for w in why)


def test_xformers_rocm_wheels_from_the_pytorch_index_on_mi300():
    from dataclasses import replace

    f = MACHINES["mi300x"]
    t = replace(f.torch, version="2.10.0+rocm7.1", hip="7.1.25424")
    xf = planned(replace(f, torch=t)).backend("xformers")
    assert xf.viable and xf.route == "torch_index", xf.reason_texts
    assert xf.steps[-1].argv[-3:] == ("xformers==0.0.35", "--index-url", "https://download.pytorch.org/whl/rocm7.1")
    old = planned(f).backend("xformers")  # torch 2.7.1+rocm6.3: no ROCm xformers for it
    assert not old.viable and "has no rocm6.3 wheels" in old.reason_texts[-1]
