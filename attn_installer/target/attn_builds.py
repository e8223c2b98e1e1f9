"""Which build of each backend is installed: a digest of its distributions' installed files.

Run by attn-install in the target Python (``python -I``, from an empty temporary directory):

    python attn_builds.py '{"flash_attention_2": ["flash-attn", "torch"], "sdpa": ["torch"]}'

prints one JSON line ``{"builds": {"flash_attention_2": "3f2a...", ...}}``. attn_bench.py and
attn_verify.py import :func:`build_digest` to stamp their results with the build they measured or
checked, so a cached bench time or a verification record belongs to one installed build.

The digest covers, per distribution: its name and version, its RECORD entries (path, sha256 and
size of every file, as the installer wrote them) and the size and modification time of each of
those files as they are now. Another wheel of the same version, a rebuild, a reinstall, or a file
replaced by hand all change it; byte-compiled caches (__pycache__) do not. A distribution that is
not installed counts as "absent". Runs on Python >= 3.9; imports nothing from attn_installer.
"""

import hashlib
import importlib.metadata as md
import json
import os
import re
import sys

__all__ = ["build_digest", "distributions"]


def canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def distributions():
    """Canonical name -> the first distribution of that name on sys.path (what import finds)."""
    found = {}
    for d in md.distributions():
        name = d.metadata["Name"]
        if name and canonical(name) not in found:
            found[canonical(name)] = d
    return found


def _one(h, name, dist):
    if dist is None:
        h.update(f"{name}: absent\n".encode())
        return
    h.update(f"{name}=={dist.version}\n".encode())
    record = dist.read_text("RECORD")
    if record is None:  # an egg-info or a layout without RECORD: its metadata folder stands for it
        h.update(b"no RECORD\n")
        path = dist.locate_file("")
        try:
            st = os.stat(path)
            h.update(f"{path}:{st.st_mtime_ns}\n".encode())
        except OSError:
            pass
        return
    for line in record.splitlines():
        if "__pycache__" in line or line.split(",", 1)[0].endswith(".pyc"):
            continue
        h.update(line.encode() + b"\n")
    for f in dist.files or ():
        p = str(f)
        if "__pycache__" in p or p.endswith(".pyc"):
            continue
        try:
            st = os.stat(dist.locate_file(f))
        except OSError:
            h.update(f"{p}: missing\n".encode())
            continue
        h.update(f"{p}:{st.st_size}:{st.st_mtime_ns}\n".encode())


def build_digest(names, found=None):
    """The digest (16 hex digits) of the installed files of the distributions *names*, in order."""
    found = distributions() if found is None else found
    h = hashlib.sha256()
    for name in names:
        key = canonical(name)
        _one(h, key, found.get(key))
    return h.hexdigest()[:16]


def main(argv):
    wanted = json.loads(argv[1]) if len(argv) > 1 and argv[1].strip() else {}
    found = distributions()
    print(json.dumps({"builds": {backend: build_digest(names, found) for backend, names in wanted.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
