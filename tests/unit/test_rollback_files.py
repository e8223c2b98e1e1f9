"""The rollback by files (install/backup.py, install/snapshot.py) on real folders, with the target
interpreter's answers replayed: what a step added is removed (a half-written package, a stash, a new
script), what it replaced is copied back with its time and mode, and "exact" is said only when the
folders' listing equals the snapshot's."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from attn_installer.install.backup import Rollback, rollback_state
from attn_installer.install.envstate import EnvState
from attn_installer.install.snapshot import compare, listing
from attn_installer.runner import Completed

PY = "/env/bin/python"


class EnvRunner:
    """Answers attn_envstate from the folders themselves (dist-info METADATA and RECORD), as the
    target program would; records every other command."""

    def __init__(self, site: Path, bindir: Path, pip: str | None = "24.0"):
        self.site, self.bindir, self.pip = site, bindir, pip
        self.calls: list[tuple[str, ...]] = []

    def packages(self) -> dict[str, str]:
        out = {}
        for info in self.site.glob("*.dist-info"):
            meta = info / "METADATA"
            if meta.is_file():
                fields = dict(line.split(": ", 1) for line in meta.read_text().splitlines() if ": " in line)
                out[fields["Name"].lower()] = fields["Version"]
        return out

    def files(self, name: str) -> list[str]:
        for info in self.site.glob("*.dist-info"):
            if info.name.lower().startswith(name.replace("-", "_") + "-") and (info / "RECORD").is_file():
                return [str(self.site / line.split(",")[0]) for line in (info / "RECORD").read_text().splitlines()
                        if line]
        return []

    def run(self, argv, *, timeout, env=None, cwd=None, on_line=None, on_idle=None, idle_seconds=600.0):
        argv = tuple(argv)
        if "attn_envstate" in argv:
            d = {"prefix": "/env", "executable": PY, "packages": self.packages(), "pip": self.pip,
                 "roots": [str(self.site), str(self.bindir)]}
            if "--files" in argv:
                names = argv[argv.index("--files") + 1].split(",")
                d["files"] = {n: self.files(n) for n in names}
            return Completed(argv, 0, json.dumps(d) + "\n", "", 0.0)
        self.calls.append(argv)
        return Completed(argv, 0, "", "", 0.0)


def dist(site: Path, name: str, version: str, files: dict[str, str]) -> None:
    info = site / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    for rel, text in files.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_text(text)
    rows = [*files, f"{info.name}/METADATA", f"{info.name}/RECORD"]
    (info / "RECORD").write_text("".join(f"{r},,\n" for r in rows))


def hashes(*roots: Path) -> dict[str, str]:
    """What a user would compare: every file's sha256 and mode, every link's target."""
    out = {}
    for root in roots:
        for p in sorted(root.rglob("*")):
            if p.is_symlink():
                out[str(p)] = "-> " + str(p.readlink())
            elif p.is_file():
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest() + f" {p.stat().st_mode:o}"
            else:
                out[str(p)] = "dir"
    return out


def setup(tmp_path):
    site, bindir = tmp_path / "site-packages", tmp_path / "bin"
    bindir.mkdir()
    (bindir / "python").symlink_to("/usr/bin/python3")
    dist(site, "numpy", "1.0", {"numpy/__init__.py": "v = 1\n", "numpy/core.py": "x = 1\n",
                                "numpy/__pycache__/core.cpython-311.pyc": "bytecode 1"})
    dist(site, "six", "1.16", {"six.py": "six\n"})
    runner = EnvRunner(site, bindir)
    state = EnvState("/env", PY, runner.packages(), "24.0", roots=(str(site), str(bindir)))
    return site, bindir, runner, state


def test_a_half_written_replacement_is_undone_file_by_file(tmp_path):
    site, bindir, runner, before = setup(tmp_path)
    rb = Rollback(runner, PY, tmp_path / "backup", say=lambda m: None)
    rb.snapshot(before)
    want = hashes(site, bindir)
    rb.back_up(before, [("numpy", "2.0")])
    # pip upgrading numpy, killed midway: the old files stashed away, half the new ones written, no RECORD
    (site / "numpy").rename(site / "~umpy")
    (site / "numpy-1.0.dist-info" / "RECORD").unlink()
    (site / "numpy").mkdir()
    (site / "numpy" / "__init__.py").write_text("v = 2\n")
    (site / "numpy" / "new_module.py").write_text("half")
    (site / "numpy-2.0.dist-info").mkdir()
    (bindir / "f2py").write_text("#!/env/bin/python\n")
    # and a fresh package, its files but no metadata yet
    (site / "xformers").mkdir()
    (site / "xformers" / "ops.py").write_text("partial")
    (site / "six.py").chmod(0o600)  # a file of another distribution, not backed up, changed
    done = rb.restore(before)
    assert not done["exact"]
    assert done["file_differences"] == [f"{site}/six.py: mode 644 -> 600"]
    assert "could NOT be fully restored" in rollback_state(done) and "six.py: mode 644 -> 600" in rollback_state(done)
    (site / "six.py").chmod(0o644)
    assert hashes(site, bindir) == want
    assert compare(json.loads((tmp_path / "backup/listing.json").read_text()), listing([str(site), str(bindir)])) \
        == []
    assert runner.calls == []  # no pip needed: every file came back from the copies


def test_exact_only_when_distributions_and_files_match(tmp_path):
    site, bindir, runner, before = setup(tmp_path)
    rb = Rollback(runner, PY, tmp_path / "backup", say=lambda m: None)
    rb.snapshot(before)
    want = hashes(site, bindir)
    rb.back_up(before, [("numpy", "1.0")])  # another build of the same version
    (site / "numpy" / "core.py").write_text("x = 'rebuilt'\n")
    (site / "numpy" / "__pycache__" / "core.cpython-311.pyc").write_text("bytecode 2")
    dist(site, "sageattention", "2.2.0", {"sageattention/__init__.py": ""})
    done = rb.restore(before)
    assert done["exact"] is True and done["uninstalled"] == ["sageattention"]
    assert done["restored"] == ["numpy==1.0"]  # same version, other files: put back and named
    assert rollback_state(done) == "the environment was restored exactly as before (distributions and files checked)"
    assert hashes(site, bindir) == want
    again = Rollback(runner, PY, tmp_path / "backup2", say=lambda m: None)
    again.snapshot(before)
    assert rollback_state(again.restore(before)) == "nothing was changed"


def test_a_replaced_distribution_without_copies_comes_back_by_pip_and_is_not_called_exact(tmp_path, monkeypatch):
    """A uv-made venv (no pip, no preview): numpy's files were never copied; uv reinstalls it, and
    the listing says it is not byte for byte."""
    monkeypatch.setattr("attn_installer.install.backup.shutil.which", lambda name: "/usr/bin/uv" if name == "uv"
                        else None)
    site, bindir, runner, before = setup(tmp_path)
    runner.pip = None
    rb = Rollback(runner, PY, tmp_path / "backup", say=lambda m: None)
    rb.snapshot(before)
    (site / "numpy-1.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: numpy\nVersion: 2.0\n")
    done = rb.restore(before)
    assert runner.calls[0] == ("uv", "pip", "install", "--python", PY, "--no-deps", "--no-index", "--find-links",
                               str(tmp_path / "backup" / "wheels"), "numpy==1.0")
    assert done["restored"] == ["numpy==1.0"] and done["exact"] is False
    assert any("numpy-1.0.dist-info/METADATA: " in d for d in done["file_differences"])


def test_the_rollback_comes_back_from_its_json(tmp_path):
    """What the journal keeps is enough: a new Rollback from to_json() restores after a kill -9."""
    site, bindir, runner, before = setup(tmp_path)
    rb = Rollback(runner, PY, tmp_path / "backup", say=lambda m: None)
    rb.snapshot(before)
    want = hashes(site, bindir)
    rb.back_up(before, [("numpy", "2.0")])
    saved = json.loads(json.dumps(rb.to_json()))
    (site / "numpy" / "__init__.py").unlink()
    (site / "numpy" / "core.py").write_text("new")
    (site / "extra.pth").write_text("import os")
    back = Rollback.from_json(saved, runner, say=lambda m: None)
    assert back.restore()["exact"] is True and hashes(site, bindir) == want
    assert not (tmp_path / "backup").exists() or back.backup_dir == tmp_path / "backup"


def test_a_corrupt_backup_is_named_not_copied(tmp_path):
    site, bindir, runner, before = setup(tmp_path)
    rb = Rollback(runner, PY, tmp_path / "backup", say=lambda m: None)
    rb.snapshot(before)
    rb.back_up(before, [("numpy", "2.0")])
    (site / "numpy" / "core.py").write_text("new")
    copy = rb.saved[str(site / "numpy/core.py")]["copy"]
    (tmp_path / "backup" / "files" / copy).write_text("bit rot")
    done = rb.restore(before)
    assert not done["exact"] and any("its backup" in n and "is corrupt" in n for n in done["not_restored"])
    assert (site / "numpy" / "core.py").read_text() == "new"  # not replaced by the corrupt copy
