"""Probe the machine into :class:`~attn_installer.facts.Facts`.

The only package that reads the OS, environment variables, NVML, nvidia-smi, rocm-smi and
files under /proc and /sys. Everything it touches comes in as arguments (``env``, ``runner``,
``root``, the NVML module), so tests run it against recorded output. It never raises for a
missing GPU, driver or torch: those are facts ("none"), recorded with their source in
``sources`` and explained in ``notes``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

from attn_installer.facts import Facts
from attn_installer.probe.amd import probe_amd
from attn_installer.probe.host import probe_host
from attn_installer.probe.nvidia import probe_nvidia
from attn_installer.probe.pyenv import discover, probe_python_env
from attn_installer.probe.toolkit import probe_toolkit
from attn_installer.runner import Runner

if TYPE_CHECKING:
    from attn_installer.matrix.model import GpuCapability

__all__ = ["probe_system"]

def probe_system(
    env: Mapping[str, str],
    runner: Runner,
    *,
    python_exe: Optional[str] = None,
    root: Path = Path("/"),
    nvml: Any = None,
    amdsmi: Any = None,
    want_arch_list: bool = False,
    distributions: Optional[frozenset[str]] = None,
    capabilities: Sequence[GpuCapability] = (),
    build_flag_files: Optional[Mapping[str, str]] = None,
) -> Facts:
    """Probe everything. ``nvml``/``amdsmi`` replace the real modules (tests); ``nvml=False``
    skips NVML (``ATTN_INSTALL_NO_NVML=1``), so nvidia-smi answers. ``distributions``: which
    installed distributions to record (the matrix's; None records all). ``capabilities``: NVIDIA's
    compute capability by GPU name (``matrices/gpus.toml``), for drivers whose nvidia-smi cannot say.
    ``build_flag_files``: distribution -> the module its build leaves with its flags (read, not imported)."""
    if nvml is None and env.get("ATTN_INSTALL_NO_NVML") == "1":
        nvml = False
    host, sources = probe_host(env, root=root)
    notes: list[str] = []

    nv = probe_nvidia(runner, root=root, nvml=nvml, visible=env.get("CUDA_VISIBLE_DEVICES"),
                      device_order=env.get("CUDA_DEVICE_ORDER"), capabilities=capabilities)
    notes.extend(nv.notes)
    gpus, driver = nv.gpus, nv.driver
    sources["gpus"] = nv.source or "none"
    sources["driver"] = nv.driver_source or "none"
    sources.update(nv.sources)
    unknown_memory = list(nv.memory_unknown)

    amd_visible = env.get("HIP_VISIBLE_DEVICES") or env.get("ROCR_VISIBLE_DEVICES")
    amd = probe_amd(runner, root=root, amdsmi=amdsmi, visible=amd_visible,
                    try_python_module=not gpus, override=env.get("HSA_OVERRIDE_GFX_VERSION"))
    notes.extend(amd.notes)
    sources.update(amd.sources)
    if amd.gpus:
        offset = len(gpus)
        gpus = gpus + tuple(replace(g, index=offset + g.index) for g in amd.gpus)
        unknown_memory.extend(offset + i for i in amd.memory_unknown)
        sources["gpus"] = (amd.source or "amd") if not nv.gpus else f"{sources['gpus']}+{amd.source}"
        if driver is None:
            driver = amd.driver
            sources["driver"] = "amdgpu" if amd.driver else "none"
    if unknown_memory:
        # facts.schema.json wants a number: 0 stands for "unknown" there, and this entry says so
        sources["gpus.memory_gb"] = ("unknown for GPU " + ", ".join(map(str, unknown_memory))
                                     + " (written as 0)")
    if not gpus:
        notes.append("no GPU visible to this process")

    interp, why = discover(env, runner, python_exe)
    pyenv = probe_python_env(runner, interp, want_arch_list=want_arch_list, distributions=distributions,
                             build_flag_files=build_flag_files)
    sources["python"] = why
    notes.extend(pyenv.notes)
    sources["torch"] = "torch/version.py (not imported)" if pyenv.torch else "none"
    if pyenv.torch and pyenv.torch.arch_list is not None:
        sources["torch.arch_list"] = "torch.cuda.get_arch_list() in a subprocess"

    bin_dir = str(Path(pyenv.python.executable).parent) if pyenv.python.executable else None
    toolkit = probe_toolkit(env, runner, root=root, rocm=amd.rocm, extra_bin=bin_dir)
    sources["toolkit.nvcc"] = "nvcc --version" if toolkit.nvcc else "none"

    from attn_installer.probe.hub import probe_hub  # noqa: PLC0415

    hub = probe_hub(env, pyenv.packages)
    if hub is not None:
        sources["hub"] = f"HEAD {hub.endpoint}" if hub.detail.startswith(("HTTP", "no answer")) else "HF_HUB_OFFLINE"
    return Facts(host=host, python=replace(pyenv.python, chosen=why), gpus=gpus, driver=driver, toolkit=toolkit,
                 torch=pyenv.torch, packages=pyenv.packages, sources=sources, notes=tuple(notes), hub=hub,
                 build_flags=pyenv.build_flags)
