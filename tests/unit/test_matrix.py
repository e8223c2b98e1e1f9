"""Every shipped matrix file validates; bad rows are all reported with file and line."""

from __future__ import annotations

import re
import shutil

import pytest

from attn_installer.errors import MatrixError
from attn_installer.matrix import MATRIX_FILES, default_matrix_dir, load_matrix


def test_shipped_matrices_load():
    m = load_matrix()
    assert {"sdpa", "flash_attention_2", "flash_attention_3", "xformers", "sage", "flex_attention",
            "eager", "flash_attention_2_rocm"} <= set(m.backend_names)
    for b in m.backends:
        assert b.source, b.name
    for row in (*m.cuda_drivers, *m.torch_builds, *m.flash_attn_releases, *m.index_wheels, *m.farm_wheels,
                *m.sources, *m.attn_impl_values, *m.legacy_flags, *m.retired_flags, *m.ranking):
        assert row.source.strip()


@pytest.mark.parametrize(("device", "row", "bf16"), [
    ("NVIDIA H200", "H200 SXM", 989.4), ("NVIDIA H200 NVL", "H200 NVL", 835.5),
    ("NVIDIA H100 80GB HBM3", "H100 SXM5", 989.4), ("NVIDIA H100 PCIe", "H100 PCIe", 756.5),
    ("NVIDIA A100-SXM4-80GB", "A100 (SXM4 40/80 GB, PCIe 40/80 GB)", 312.0), ("NVIDIA A10G", "A10G (AWS G5)", 70.0),
    ("NVIDIA A10", "A10", 125.0), ("NVIDIA L40S", "L40S", 362.05), ("NVIDIA L40", "L40", 181.05),
    ("NVIDIA L4", "L4", 121.0), ("NVIDIA B200", "B200 (HGX B200, 1000 W)", 2250.0), ("NVIDIA H20", "H20", 148.0),
    ("NVIDIA GB200", "GB200 (Blackwell GPU in a Grace Blackwell superchip)", 2500.0),
    ("AMD Instinct MI300X", "AMD Instinct MI300X", 1307.4), ("Tesla T4", "Tesla T4", 0.0),
])
def test_gpu_peaks_match_device_names_most_specific_first(device, row, bf16):
    peak = load_matrix().peak_for(device)
    assert peak is not None and peak.name == row and peak.bf16_tflops == bf16
    assert peak.source.strip() and peak.confidence in ("high", "medium", "low")


def test_gpu_peaks_rows_are_sane_and_unknown_gpus_match_none():
    m = load_matrix()
    assert m.peak_for("Some Future Accelerator") is None
    for p in m.gpu_peaks:
        assert p.bf16_tflops >= 0 and p.fp16_tflops > 0, p.name  # every listed GPU has fp16 tensor cores
        assert p.sparse_quoted == 0 or p.sparse_quoted >= 1.9 * p.bf16_tflops, p.name  # dense = half the sparse


def test_a_bad_peak_pattern_is_reported(broken):
    edit(broken, "gpu_peaks.toml", ("name_pattern = 'H200'", "name_pattern = 'H200('"))
    msg = load_error(broken)
    assert "gpu_peaks.toml" in msg and "field 'name_pattern': not a regular expression" in msg


def test_every_file_is_read():
    for name in MATRIX_FILES:
        assert (default_matrix_dir() / name).is_file()


def test_sageattention_220_comes_from_source_not_pypi():
    m = load_matrix()
    assert m.backend("sage").routes == ("installed", "source")
    sb = m.source_for("sage")
    # pinned past the v2.2.0 tag, whose sageattn() returns garbage on sm_90 (fixed upstream in d970424)
    assert re.fullmatch(r"[0-9a-f]{40}", sb.ref) and "d970424" in sb.source
    assert m.backend("sage").kernels["sm_90"].startswith("sageattn_qk_int8_pv_fp8_cuda_sm90")


@pytest.fixture
def broken(tmp_path):
    d = tmp_path / "matrices"
    shutil.copytree(default_matrix_dir(), d)
    return d


def edit(directory, name, *replacements):
    """Apply (old, new) replacements, each once, to a copied matrix file."""
    path = directory / name
    text = path.read_text()
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new, 1)
    path.write_text(text)


def load_error(directory) -> str:
    with pytest.raises(MatrixError) as e:
        load_matrix(directory)
    return str(e.value)


def test_every_bad_row_is_reported_with_file_and_line(broken):
    edit(broken, "backends.toml", ('torch = ">=2.2"', 'torch = "newer than 2.2"'),
         ("packing = false", 'packing = "no"'), ('routes = ["builtin"]', 'routes = ["builtin", "conda"]'))
    edit(broken, "routes.toml", ("min_sm = 75", "min_smm = 75"))
    msg = load_error(broken)
    assert msg.startswith("4 problems in the matrix")
    lines = msg.splitlines()[1:]
    assert any("backends.toml:" in ln and "'flash_attention_2'" in ln and "field 'torch'" in ln for ln in lines)
    assert any("field 'packing': expected true or false" in ln for ln in lines)
    assert any("'conda' is not one of builtin" in ln for ln in lines)
    assert any("routes.toml:" in ln and "unknown field 'min_smm' (did you mean 'min_sm'?)" in ln for ln in lines)
    # the line number points at the row's [[backend]] header
    fa2_line = next(ln for ln in lines if "field 'torch'" in ln).split(":")[1]
    assert (broken / "backends.toml").read_text().splitlines()[int(fa2_line) - 1].strip() == "[[backend]]"


def test_unknown_backend_in_ranking_and_missing_source_row(broken):
    edit(broken, "ranking.toml", ('"flash_attention_3", "sdpa"', '"flash_attention_9", "sdpa"'))
    edit(broken, "sources.toml", ('backend = "sage"', 'backend = "sage_attention"'))
    msg = load_error(broken)
    assert "unknown backend 'flash_attention_9'" in msg
    assert "unknown backend 'sage_attention'" in msg
    assert "backend 'sage' lists route 'source' but sources.toml has no [[source]]" in msg


def test_invalid_toml(broken):
    (broken / "torch.toml").write_text("[[cuda_driver]\n")
    with pytest.raises(MatrixError, match=r"torch.toml: not valid TOML"):
        load_matrix(broken)


def test_missing_file(broken):
    (broken / "axolotl.toml").unlink()
    with pytest.raises(MatrixError, match=r"axolotl.toml: cannot read"):
        load_matrix(broken)


def test_bad_arch_list(broken):
    edit(broken, "backends.toml", ('"sm_89", "sm_90", "sm_120"]', '"sm_89", "hopper"]'))
    assert "unknown arch 'hopper'" in load_error(broken)


def test_templates_and_call_tables_are_checked_when_loaded(broken):
    edit(broken, "flash_attn_wheels.toml", ("cxx11abi{abi}", "cxx11abi{abbi}"))
    edit(broken, "torch.toml", ('torch_index_url = "https://download.pytorch.org/whl/{flavour}"',
                                'torch_index_url = "https://download.pytorch.org/whl/{flavour"'))
    edit(broken, "sources.toml", ('"{cuda_home}/include/cccl"', '"{cuda}/include/cccl"'))
    edit(broken, "backends.toml", ('convention = "flash", module = "flash_attn_interface"',
                                   'convention = "flashy", module = "flash_attn_interface"'))
    msg = load_error(broken)
    assert "top-level 'url': unknown placeholder {abbi} (known: {version}, {cuda_major}" in msg
    assert "top-level 'torch_index_url': not a valid template" in msg
    assert "unknown placeholder {cuda} (known: {src}, {cuda_home})" in msg
    assert "field 'call': field 'convention': 'flashy' is not one of sdpa, eager, flex" in msg


def test_every_backend_has_a_call_and_the_bench_order_is_known():
    m = load_matrix()
    assert {b.call.convention for b in m.backends} == {"sdpa", "eager", "flex", "xformers", "flash", "sage"}
    assert set(m.bench_order) <= set(m.backend_names)
    assert m.bench_aliases()["fa3"] == "flash_attention_3"
    assert m.pinned[0] == "torch" and "flash-attn" in m.recorded_distributions


def test_a_matrix_file_that_is_not_utf8_or_too_big_is_one_line(broken):
    (broken / "ranking.toml").write_bytes("\ufeff".encode("utf-16"))
    assert "ranking.toml: cannot read (is UTF-16" in load_error(broken)
    (broken / "ranking.toml").write_bytes(b"# " + b"x" * (1 << 21))
    assert "ranking.toml: cannot read (is 2097154 bytes; at most 1048576 are read)" in load_error(broken)


def test_gpu_tables_are_checked(broken):
    edit(broken, "gpus.toml", ('cc = "7.0"', 'cc = "sm_70"'),
         ('names = ["Jetson Nano"]', 'names = ["Jetson Nano", "Tesla T4"]'),
         ('vendor = "amd"\notherwise = true', 'vendor = "amd"\notherwise = true\namd_gfx = ["gfx906"]'))
    msg = load_error(broken)
    assert "gpus.toml:" in msg and "field 'cc': 'sm_70' is not a compute capability like 8.6" in msg
    # "Tesla T4" and "NVIDIA T4" are one name to the lookup: a GPU cannot have two capabilities
    assert "name 'Tesla T4' is in the 7.5 and the 5.3 rows" in msg
    assert "give nvidia_sm or amd_gfx, or otherwise = true, not both" in msg
