"""Built wheels by build key (install/wheelcache.py): a corrupt cache entry is deleted and named, a
wheelhouse export is one folder per key with the key file (and the wheel's sha256) written last, and
a node takes only the wheel its own key names, its hash and tags checked: a key file copied beside
a wheel built for another torch, or beside another wheel, makes nothing install."""

from __future__ import annotations

import json

from attn_installer.install.wheelcache import KEY_FILE, cached_wheel, export, problem, store_built
from tests.pkgindex import build_wheel

KEY = {"backend": "sage", "torch": "2.8.0+cu126", "cuda": "12.6", "cxx11abi": True, "python": "cp311",
       "machine": "x86_64", "archs": ["sm_90"], "env": {}}
TAG = "cp311-cp311-linux_x86_64"


def built(tmp_path, version="2.2.0", text="ok = True\n"):
    folder = tmp_path / "cache" / "wheels" / "sage-0123456789abcdef"
    build_wheel(folder, "sageattention", version, {"sageattention/__init__.py": text}, tag=TAG)
    return folder


def test_a_built_wheel_is_recorded_with_its_hash_and_found_again(tmp_path):
    folder = built(tmp_path)
    wheel = store_built(folder, KEY)
    rec = json.loads((folder / KEY_FILE).read_text())
    assert rec["wheel"] == wheel.name and rec["key"] == KEY and len(rec["sha256"]) == 64
    assert cached_wheel(folder, KEY, None) == wheel and problem(folder, KEY, wheel) is None


def test_a_corrupt_cached_wheel_is_deleted_and_named(tmp_path):
    folder = built(tmp_path)
    wheel = store_built(folder, KEY)
    data = bytearray(wheel.read_bytes())
    data[len(data) // 2] ^= 0xFF
    wheel.write_bytes(bytes(data))
    said = []
    assert cached_wheel(folder, KEY, None, said.append) is None
    assert not wheel.exists() and not (folder / KEY_FILE).exists()
    assert f"the cached wheel {wheel} is not usable (sha256 " in said[0] and "building again" in said[0]


def test_an_older_key_file_without_a_hash_is_upgraded_after_a_zip_test(tmp_path):
    folder = built(tmp_path)
    (folder / KEY_FILE).write_text(json.dumps(KEY))
    (wheel,) = folder.glob("*.whl")
    assert cached_wheel(folder, KEY, None) == wheel
    assert json.loads((folder / KEY_FILE).read_text())["sha256"]
    wheel.write_bytes(b"PK\x03\x04 truncated")
    (folder / KEY_FILE).write_text(json.dumps(KEY))
    said = []
    assert cached_wheel(folder, KEY, None, said.append) is None and "no single usable wheel" in said[0]


def test_the_export_is_a_folder_per_key_and_another_node_takes_it(tmp_path):
    folder = built(tmp_path)
    wheel = store_built(folder, KEY)
    house = tmp_path / "house"
    said = []
    export(wheel, KEY, folder.name, house, said.append)
    out = house / folder.name
    assert sorted(p.name for p in out.iterdir()) == sorted([wheel.name, KEY_FILE])
    assert not list(house.glob("*.whl"))  # nothing at the top for `--find-links` to resolve over
    node = tmp_path / "node" / folder.name
    got = cached_wheel(node, KEY, house)
    assert got == node / wheel.name and got.read_bytes() == wheel.read_bytes()
    assert json.loads((node / KEY_FILE).read_text())["sha256"] == json.loads((out / KEY_FILE).read_text())["sha256"]


def test_two_builds_of_one_version_with_other_keys_never_share_a_file(tmp_path):
    a = built(tmp_path)
    wa = store_built(a, KEY)
    other = {**KEY, "archs": ["sm_80"]}
    b = tmp_path / "cache" / "wheels" / "sage-fedcba9876543210"
    build_wheel(b, "sageattention", "2.2.0", {"sageattention/__init__.py": "ok = 'sm80'\n"}, tag=TAG)
    wb = store_built(b, other)
    house = tmp_path / "house"
    export(wa, KEY, a.name, house, lambda m: None)
    export(wb, other, b.name, house, lambda m: None)
    assert wa.name == wb.name
    assert (house / a.name / wa.name).read_bytes() != (house / b.name / wb.name).read_bytes()
    assert cached_wheel(tmp_path / "n1" / a.name, KEY, house).read_bytes() == wa.read_bytes()
    assert cached_wheel(tmp_path / "n2" / b.name, other, house).read_bytes() == wb.read_bytes()


def test_a_key_file_cannot_make_a_node_install_another_build(tmp_path):
    folder = built(tmp_path)
    wheel = store_built(folder, KEY)
    house = tmp_path / "house"
    export(wheel, KEY, folder.name, house, lambda m: None)
    out = house / folder.name
    rec = json.loads((out / KEY_FILE).read_text())
    node = tmp_path / "node" / folder.name

    # 1. the key file of this node's key copied beside a wheel built for another torch
    evil = build_wheel(tmp_path / "evil", "sageattention", "2.2.0", {"sageattention/__init__.py": "torch29 = 1\n"},
                       tag=TAG)
    (out / wheel.name).write_bytes(evil.read_bytes())
    said = []
    assert cached_wheel(node, KEY, house, said.append) is None
    assert "is not usable (sha256 " in said[0] and "its key file records" in said[0]
    # 2. a key edited to name this node's torch over a wheel built for another (its hash is the wheel's):
    #    the key is the whole key, so a key that differs in any field is not this node's
    (out / wheel.name).write_bytes(wheel.read_bytes())
    (out / KEY_FILE).write_text(json.dumps({**rec, "key": {**KEY, "torch": "2.9.0+cu126"}}))
    said.clear()
    assert cached_wheel(node, KEY, house, said.append) is None and "is not this node's build key" in said[0]
    # 3. the right key over a wheel for another Python / machine (its hash put in the key as well)
    cp312 = build_wheel(tmp_path / "py", "sageattention", "2.2.0", {"x.py": ""}, tag="cp312-cp312-linux_aarch64")
    (out / cp312.name).write_bytes(cp312.read_bytes())
    from attn_installer.files import sha256_of

    (out / KEY_FILE).write_text(json.dumps({**rec, "wheel": cp312.name, "sha256": sha256_of(cp312)}))
    said.clear()
    assert cached_wheel(node, KEY, house, said.append) is None and "is built for cp312, not cp311" in said[0]
    # 4. a wheel name that leaves the folder, no hash at all, an export of an older attn-install
    (out / KEY_FILE).write_text(json.dumps({**rec, "wheel": "../../x.whl"}))
    said.clear()
    assert cached_wheel(node, KEY, house, said.append) is None and "not a wheel in its folder" in said[0]
    (out / KEY_FILE).write_text(json.dumps({k: v for k, v in rec.items() if k != "sha256"}))
    said.clear()
    assert cached_wheel(node, KEY, house, said.append) is None and "carries no sha256 of its wheel" in said[0]
    (house / f"{wheel.name}.{KEY_FILE}").write_text(json.dumps(KEY))
    (out / KEY_FILE).unlink()
    said.clear()
    assert cached_wheel(node, KEY, house, said.append) is None and "an export of an older attn-install" in said[0]
    assert not node.exists() or not list(node.glob("*.whl"))
