"""A table of machines as Facts, for plan tests (the machines the core issue names)."""

from __future__ import annotations

from attn_installer.facts import Driver, Facts, Gpu, Host, PythonInfo, Toolkit, TorchInfo

LINUX = Host(os="linux", machine="x86_64", glibc="2.35", cpu_count=16, memory_gb=64.0)


def nv(name: str, arch: str, mem: float = 80.0, index: int = 0) -> Gpu:
    cc = f"{arch[3:-1]}.{arch[-1]}"
    return Gpu(index=index, vendor="nvidia", name=name, arch=arch, compute_capability=cc, memory_gb=mem)


def amd(name: str, arch: str, mem: float = 192.0) -> Gpu:
    return Gpu(index=0, vendor="amd", name=name, arch=arch, memory_gb=mem)


def torch(version: str, cuda: str | None = None, hip: str | None = None, abi: bool | None = True) -> TorchInfo:
    return TorchInfo(version=version, cuda=cuda, hip=hip, cxx11abi=abi)


def facts(gpus=(), driver=None, t=None, host=LINUX, py="3.11.9", toolkit=Toolkit(), packages=None) -> Facts:
    pk = dict(packages or {})
    if t is not None:
        pk.setdefault("torch", t.version)
    return Facts(host=host, python=PythonInfo(version=py, executable="/env/bin/python"), gpus=tuple(gpus),
                 driver=driver, toolkit=toolkit, torch=t, packages=pk)


NVCC128 = Toolkit(nvcc="12.8", cuda_home="/usr/local/cuda", gcc="12.3.0", ninja="/env/bin/ninja")
NVCC130 = Toolkit(nvcc="13.0", cuda_home="/usr/local/cuda", gcc="13.3.0", ninja="/env/bin/ninja")

MACHINES = {
    "colab_t4": facts([nv("Tesla T4", "sm_75", 15.0)], Driver("nvidia", "550.54.15", cuda="12.4"),
                      torch("2.8.0+cu126", "12.6"),
                      host=Host(os="linux", machine="x86_64", glibc="2.35", cpu_count=2, memory_gb=12.7, colab=True),
                      packages={"torchvision": "0.23.0+cu126", "triton": "3.4.0"}),
    "a100": facts([nv("NVIDIA A100-SXM4-80GB", "sm_80")], Driver("nvidia", "550.54.15", cuda="12.4"),
                  torch("2.8.0+cu128", "12.8"), toolkit=NVCC128),
    "h100": facts([nv("NVIDIA H100 80GB HBM3", "sm_90")], Driver("nvidia", "570.86.15", cuda="12.8"),
                  torch("2.8.0+cu128", "12.8"), toolkit=NVCC128),
    "h200_torch211": facts([nv("NVIDIA H200", "sm_90", 140.4)], Driver("nvidia", "580.159.04", cuda="13.0"),
                           torch("2.11.0+cu130", "13.0"), toolkit=NVCC130),
    "rtx4090": facts([nv("NVIDIA GeForce RTX 4090", "sm_89", 24.0)], Driver("nvidia", "560.35.03", cuda="12.6"),
                     torch("2.7.1+cu126", "12.6"), py="3.12.3"),
    "rtx5090": facts([nv("NVIDIA GeForce RTX 5090", "sm_120", 32.0)], Driver("nvidia", "575.51.03", cuda="12.9"),
                     torch("2.8.0+cu128", "12.8"), toolkit=NVCC128),
    "rtx5090_cu126": facts([nv("NVIDIA GeForce RTX 5090", "sm_120", 32.0)], Driver("nvidia", "575.51.03", cuda="12.9"),
                           torch("2.7.1+cu126", "12.6")),
    "b200": facts([nv("NVIDIA B200", "sm_100", 180.0)], Driver("nvidia", "580.65.06", cuda="13.0"),
                  torch("2.8.0+cu128", "12.8"), toolkit=NVCC128),
    "v100_cu128_211": facts([nv("Tesla V100-SXM2-16GB", "sm_70", 16.0)], Driver("nvidia", "550.54.15", cuda="12.4"),
                            torch("2.11.0+cu128", "12.8")),
    "v100_cu126": facts([nv("Tesla V100-SXM2-16GB", "sm_70", 16.0)], Driver("nvidia", "550.54.15", cuda="12.4"),
                        torch("2.7.1+cu126", "12.6")),
    "mi300x": facts([amd("AMD Instinct MI300X", "gfx942")], Driver("amd", "6.8.5", rocm="6.3.1"),
                    torch("2.7.1+rocm6.3", hip="6.3.42131"),
                    toolkit=Toolkit(hipcc="/opt/rocm/bin/hipcc", rocm="6.3.1", gcc="11.4.0", ninja="/env/bin/ninja")),
    "rx7900xtx": facts([amd("Radeon RX 7900 XTX", "gfx1100", 24.0)], Driver("amd", "6.8.5", rocm="6.3.1"),
                       torch("2.7.1+rocm6.3", hip="6.3.42131"),
                       toolkit=Toolkit(hipcc="/opt/rocm/bin/hipcc", rocm="6.3.1", ninja="/env/bin/ninja")),
    "cpu_only": facts([], None, torch("2.8.0+cpu")),
    "no_torch": facts([nv("NVIDIA A100-SXM4-80GB", "sm_80")], Driver("nvidia", "550.54.15", cuda="12.4"), None),
    "windows_4090": facts([nv("NVIDIA GeForce RTX 4090", "sm_89", 24.0)], Driver("nvidia", "566.03", cuda="12.7"),
                          torch("2.7.1+cu126", "12.6"),
                          host=Host(os="windows", machine="AMD64", glibc=None, cpu_count=16, memory_gb=64.0)),
    "mixed_a100_t4": facts([nv("NVIDIA A100-SXM4-80GB", "sm_80"), nv("Tesla T4", "sm_75", 15.0, index=1)],
                           Driver("nvidia", "550.54.15", cuda="12.4"), torch("2.8.0+cu128", "12.8")),
    "old_driver": facts([nv("NVIDIA A100-SXM4-80GB", "sm_80")], Driver("nvidia", "470.82.01", cuda="11.4"),
                        torch("2.8.0+cu128", "12.8")),
}


TARGET_FIELDS = ("cache_dir", "python", "installer", "wheelhouse", "torch_index")


def planned(f: Facts, **kw):
    """The plan for facts *f*; keyword arguments are Request fields, plus the Target's
    (cache_dir, python, installer, wheelhouse)."""
    from attn_installer.matrix import load_matrix
    from attn_installer.plan import plan_for
    from attn_installer.request import Request, Target

    target = Target(**{k: kw.pop(k) for k in TARGET_FIELDS if k in kw})
    return plan_for(f, load_matrix(), Request(**kw), target)
