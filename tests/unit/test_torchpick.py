"""`attn-install torch`: the torch build that fits each machine's GPUs, driver and Python."""

from __future__ import annotations

from dataclasses import replace

import pytest

from attn_installer.facts import Driver
from attn_installer.matrix import load_matrix
from attn_installer.torchpick import TorchChoice, TorchProblem, choose_torch
from tests.machines import MACHINES, amd, facts, nv

URL = "https://download.pytorch.org/whl/"
T4 = nv("Tesla T4", "sm_75", 15.0)
A100 = nv("NVIDIA A100-SXM4-80GB", "sm_80")
H100 = nv("NVIDIA H100 80GB HBM3", "sm_90")
V100 = nv("Tesla V100-SXM2-16GB", "sm_70", 16.0)
RTX5090 = nv("NVIDIA GeForce RTX 5090", "sm_120", 32.0)
GTX980 = nv("NVIDIA GeForce GTX 980", "sm_52", 4.0)
K80 = nv("Tesla K80", "sm_37", 12.0)
K40 = nv("Tesla K40m", "sm_35", 12.0)

CASES = [
    # (label, gpus, driver, python, version, flavour)
    ("v100 on 550: the last CUDA builds with sm_70 are cu126 (2.15 dropped it)",
     [V100], Driver("nvidia", "550.54.15", cuda="12.4"), "3.11.9", "2.14.1", "cu126"),
    ("t4 on colab's 550 driver: no CUDA 13 build", [T4], Driver("nvidia", "550.54.15", cuda="12.4"), "3.11.9",
     "2.14.1", "cu126"),
    ("t4 on 580: the newest torch, PyPI's default", [T4], Driver("nvidia", "580.95.05", cuda="13.0"), "3.12.3",
     "2.15.0", "cu132"),
    ("a100 on a 570 (CUDA 12.8 generation) driver gets a cu12x build", [A100],
     Driver("nvidia", "570.86.15", cuda="12.8"), "3.11.9", "2.14.1", "cu126"),
    ("h100 on 580", [H100], Driver("nvidia", "580.65.06", cuda="13.0"), "3.11.9", "2.15.0", "cu132"),
    ("h100 on 580 with Python 3.10: torch 2.15 needs 3.11", [H100], Driver("nvidia", "580.65.06", cuda="13.0"),
     "3.10.12", "2.14.1", "cu130"),
    ("rtx 5090 on 575: sm_120 needs a cu128+ build, 13.x needs 580", [RTX5090],
     Driver("nvidia", "575.51.03", cuda="12.9"), "3.12.3", "2.11.0", "cu128"),
    ("rtx 5090 on 580", [RTX5090], Driver("nvidia", "580.95.05", cuda="13.0"), "3.12.3", "2.15.0", "cu132"),
    ("maxwell: cu126 still carries sm_50", [GTX980], Driver("nvidia", "550.54.15", cuda="12.4"), "3.11.9",
     "2.14.1", "cu126"),
    ("mi300x: the newest ROCm build with gfx942", [amd("AMD Instinct MI300X", "gfx942")],
     Driver("amd", "6.8.5", rocm="6.3.1"), "3.11.9", "2.14.1", "rocm7.2"),
    ("rx 6800 (gfx1030) has ROCm builds too", [amd("Radeon RX 6800 XT", "gfx1030", 16.0)],
     Driver("amd", "6.8.5", rocm="6.4"), "3.11.9", "2.14.1", "rocm7.2"),
    ("no gpu: the CPU build", [], None, "3.11.9", "2.15.0", "cpu"),
    ("no gpu, Python 3.9: the newest torch for 3.9", [], None, "3.9.18", "2.8.0", "cpu"),
]


@pytest.mark.parametrize(("label", "gpus", "driver", "py", "version", "flavour"), CASES, ids=[c[0] for c in CASES])
def test_the_build_that_fits(label, gpus, driver, py, version, flavour):
    f = facts(gpus, driver, None, py=py)
    choice = choose_torch(f, load_matrix())
    assert isinstance(choice, TorchChoice), choice
    assert (choice.version, choice.flavour) == (version, flavour)
    assert choice.argv == ("/env/bin/python", "-m", "pip", "install", f"torch=={version}", "--index-url",
                           URL + flavour)
    assert choice.command == f"/env/bin/python -m pip install torch=={version} --index-url {URL}{flavour}"


def test_no_build_for_a_kepler_gpu_or_an_old_driver():
    m = load_matrix()
    k40 = choose_torch(facts([K40], Driver("nvidia", "470.82.01", cuda="11.4")), m)
    assert isinstance(k40, TorchProblem)
    assert "GPU 0 (Tesla K40m, sm_35)" in k40.text and "470.82.01" in k40.text
    k80 = choose_torch(facts([K80], Driver("nvidia", "470.82.01", cuda="11.4")), m)  # cu118 still has sm_37
    assert isinstance(k80, TorchChoice) and (k80.version, k80.flavour) == ("2.7.1", "cu118")
    old = choose_torch(facts([A100], Driver("nvidia", "470.82.01", cuda="11.4")), m)
    # CUDA 11.8 builds run on 450.80+: torch 2.7.1 is the newest with one
    assert isinstance(old, TorchChoice) and (old.version, old.flavour) == ("2.7.1", "cu118")


@pytest.mark.parametrize(("py", "needle"), [("3.16.0", "Python 3.16.0"), ("3.7.17", "Python 3.7.17")])
def test_a_python_no_torch_supports_is_named(py, needle):
    got = choose_torch(facts([H100], Driver("nvidia", "580.65.06", cuda="13.0"), None, py=py), load_matrix())
    assert isinstance(got, TorchProblem)
    assert needle in got.text and "torch 2.15.0 needs Python <3.16,>=3.11" in got.text


def test_mixed_vendors_cannot_share_one_torch():
    got = choose_torch(facts([A100, amd("AMD Instinct MI300X", "gfx942")], None), load_matrix())
    assert isinstance(got, TorchProblem) and "one torch build cannot use both" in got.text


def test_blockers_print_the_command():
    from tests.machines import planned

    no_torch = planned(MACHINES["no_torch"])
    assert no_torch.blockers[0].endswith(
        "install the torch build for this machine: `/env/bin/python -m pip install torch==2.14.1 --index-url "
        "https://download.pytorch.org/whl/cu126` (or `attn-install torch --yes`; attn-install never replaces a torch)")
    v100 = planned(MACHINES["v100_cu128_211"])
    assert "`/env/bin/python -m pip install torch==2.14.1 --index-url https://download.pytorch.org/whl/cu126`" \
        in v100.blockers[0]
    old = replace(MACHINES["old_driver"])
    assert "`/env/bin/python -m pip install torch==2.7.1 --index-url https://download.pytorch.org/whl/cu118`" \
        in planned(old).blockers[0]
