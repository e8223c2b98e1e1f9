"""Safe writes of the user's config: symlinks, read-only files and folders, mode and owner, backup
names reserved atomically, a file that changes mid-merge, failures that leave nothing behind, and
`-o` never replacing a file attn-install did not write."""

from __future__ import annotations

import errno
import os
import stat
import threading

import pytest

from attn_installer import configfile as cfgmod
from attn_installer.configfile import is_fragment, merge_file, reserve_backup, write_fragment
from attn_installer.errors import ConfigError
from tests.conftest import FIXTURES

LEGACY = (FIXTURES / "axolotl" / "training" / "mistral-legacy-012.yaml").read_bytes()
SET = {"attn_implementation": "sdpa"}
REMOVE = ["flash_attention", "sdp_attention", "xformers_attention", "s2_attention"]


def files(d):
    return sorted(p.name for p in d.iterdir())


def test_symlinked_config_is_updated_at_its_target_and_the_link_stays(tmp_path):
    real = tmp_path / "configs" / "mistral.yaml"
    real.parent.mkdir()
    real.write_bytes(LEGACY)
    link = tmp_path / "train.yaml"
    link.symlink_to(real)
    out = merge_file(link, SET, REMOVE)
    assert link.is_symlink() and link.readlink() == real
    assert "attn_implementation: sdpa\n" in real.read_text() and real.read_text() == link.read_text()
    assert out.backup == real.with_name("mistral.yaml.bak") and out.backup.read_bytes() == LEGACY
    assert files(tmp_path) == ["configs", "train.yaml"]


def test_read_only_file_is_refused_in_one_line(tmp_path):
    cfg = tmp_path / "ro.yaml"
    cfg.write_bytes(LEGACY)
    cfg.chmod(0o444)
    with pytest.raises(ConfigError) as e:
        merge_file(cfg, SET, REMOVE)
    assert str(e.value) == (f"{cfg}: the file is read-only: cannot update it (make it writable, e.g. `chmod u+w "
                            f"{cfg}`, or merge a copy); nothing was changed")
    assert e.value.exit_code == 10
    assert cfg.read_bytes() == LEGACY and files(tmp_path) == ["ro.yaml"]


def test_read_only_folder_is_refused_in_one_line(tmp_path):
    d = tmp_path / "ro"
    d.mkdir()
    cfg = d / "train.yaml"
    cfg.write_bytes(LEGACY)
    d.chmod(0o555)
    try:
        with pytest.raises(ConfigError, match=r"its folder .*/ro is read-only: .*nothing was changed$"):
            merge_file(cfg, SET, REMOVE)
        assert cfg.read_bytes() == LEGACY and files(d) == ["train.yaml"]
    finally:
        d.chmod(0o755)


def test_mode_and_owner_are_kept(tmp_path):
    cfg = tmp_path / "train.yaml"
    cfg.write_bytes(LEGACY)
    cfg.chmod(0o640)
    if os.geteuid() == 0:  # only root can hand a file to another owner
        os.chown(cfg, 12345, 23456)
    before = cfg.stat()
    out = merge_file(cfg, SET, REMOVE)
    after = cfg.stat()
    assert stat.S_IMODE(after.st_mode) == 0o640 and (after.st_uid, after.st_gid) == (before.st_uid, before.st_gid)
    b = out.backup.stat()
    assert stat.S_IMODE(b.st_mode) == 0o640 and (b.st_uid, b.st_gid) == (before.st_uid, before.st_gid)


def test_a_config_this_user_cannot_give_its_owner_back_is_rewritten_in_place(tmp_path, monkeypatch):
    cfg = tmp_path / "shared.yaml"
    cfg.write_bytes(LEGACY)
    inode = cfg.stat().st_ino
    monkeypatch.setattr(cfgmod, "_keep_owner", lambda fd, st: False)
    out = merge_file(cfg, SET, REMOVE)
    assert cfg.stat().st_ino == inode  # the same file: owner, group, mode and hard links stay
    assert "attn_implementation: sdpa\n" in cfg.read_text() and out.backup.read_bytes() == LEGACY
    assert not [p for p in files(tmp_path) if p.endswith(".tmp")]


def test_backup_names_are_reserved_atomically(tmp_path):
    target = tmp_path / "t.yaml"
    (tmp_path / "t.yaml.bak").write_text("old")
    (tmp_path / "t.yaml.bak.1").symlink_to(tmp_path / "nowhere")  # a dangling link is taken too, never followed
    path, fd = reserve_backup(target, 0o600)
    os.close(fd)
    assert path.name == "t.yaml.bak.2" and (tmp_path / "t.yaml.bak").read_text() == "old"
    assert not (tmp_path / "nowhere").exists()
    again, fd = reserve_backup(target, 0o600)
    os.close(fd)
    assert again.name == "t.yaml.bak.3"


def test_two_merges_at_once_never_lose_a_backup(tmp_path):
    cfg = tmp_path / "train.yaml"
    cfg.write_bytes(LEGACY)
    values = ["sdpa", "eager", "flex_attention", "xformers", "flash_attention_2", "flash_attention_3", "sage", "fp8"]
    start = threading.Barrier(len(values))
    results: list[object] = []

    def merge(value):
        start.wait()
        try:
            results.append(merge_file(cfg, {"attn_implementation": value}, REMOVE))
        except ConfigError as e:
            results.append(e)

    threads = [threading.Thread(target=merge, args=(v,)) for v in values]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done = [r for r in results if not isinstance(r, ConfigError)]
    refused = [r for r in results if isinstance(r, ConfigError)]
    assert all("changed while it was being merged" in str(e) for e in refused)
    backups = sorted(p for p in tmp_path.iterdir() if ".bak" in p.name)
    written = [r.backup for r in done if r.backup is not None]
    assert len(set(written)) == len(written) == len(backups) and set(written) == set(backups)
    assert any(b.read_bytes() == LEGACY for b in backups)  # the original is always somewhere
    for b in backups:  # each backup is a whole file some merge read
        assert b.read_bytes() == LEGACY or b.read_text().count("attn_implementation:") == 1
    assert not [p for p in files(tmp_path) if p.endswith(".tmp")]


def test_a_file_changed_mid_merge_is_not_overwritten(tmp_path, monkeypatch):
    cfg = tmp_path / "train.yaml"
    cfg.write_bytes(LEGACY)
    real = cfgmod._write_backup

    def backup_then_edit(target, raw, st):
        b = real(target, raw, st)
        target.write_text("base_model: edited-meanwhile\n")
        return b

    monkeypatch.setattr(cfgmod, "_write_backup", backup_then_edit)
    with pytest.raises(ConfigError, match="changed while it was being merged"):
        merge_file(cfg, SET, REMOVE)
    assert cfg.read_text() == "base_model: edited-meanwhile\n" and files(tmp_path) == ["train.yaml"]


def test_a_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    cfg = tmp_path / "train.yaml"
    cfg.write_bytes(LEGACY)

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cfgmod, "_replace", full)
    with pytest.raises(ConfigError) as e:
        merge_file(cfg, SET, REMOVE)
    assert str(e.value) == f"{cfg}: cannot write (No space left on device); nothing was changed"
    assert cfg.read_bytes() == LEGACY and files(tmp_path) == ["train.yaml"]


def test_byte_order_mark_and_crlf_stay(tmp_path):
    cfg = tmp_path / "win.yaml"
    cfg.write_bytes(b"\xef\xbb\xbfbase_model: x\r\nflash_attention: true\r\nlr: 1\r\n")
    merge_file(cfg, SET, ["flash_attention"])
    assert cfg.read_bytes() == b"\xef\xbb\xbfbase_model: x\r\nattn_implementation: sdpa\r\nlr: 1\r\n"


def test_o_never_replaces_a_file_attn_install_did_not_write(tmp_path):
    frag = "# written by attn-install 0.1.0: sdpa for full\nattn_implementation: sdpa\n"
    assert is_fragment(frag) and not is_fragment(LEGACY.decode())
    out = tmp_path / "attn-install-config.yaml"
    assert write_fragment(out, frag) is None and out.read_text() == frag
    assert write_fragment(out, frag.replace("sdpa", "eager")) is None  # its own fragment: replaced
    users = tmp_path / "train.yaml"
    users.write_bytes(LEGACY)
    with pytest.raises(ConfigError) as e:
        write_fragment(users, frag)
    msg = str(e.value)
    assert msg.startswith(f"{users} exists and is not a fragment attn-install wrote") and "\n" not in msg
    assert f"`attn-install config --merge {users}`" in msg and "--force" in msg
    assert users.read_bytes() == LEGACY and files(tmp_path) == ["attn-install-config.yaml", "train.yaml"]
    backup = write_fragment(users, frag, force=True)
    assert backup == tmp_path / "train.yaml.bak" and backup.read_bytes() == LEGACY and users.read_text() == frag
