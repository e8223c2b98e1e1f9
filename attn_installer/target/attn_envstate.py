"""The target environment as its own interpreter sees it: prefix, pip, and every distribution.

Run by attn-install in the target Python (``python -I``, from an empty temporary directory); prints
one JSON line: {"prefix", "executable", "pip", "packages": {name: version}, "files": {name: {...}}}.
With ``--files``, each distribution's RECORD entries (path, sha256 of the file as it is now) and
the top-level folders of site-packages, so a rollback can tell which files a step wrote.
Runs on Python >= 3.9; imports nothing from attn_installer.
"""

import hashlib
import importlib.metadata as md
import json
import os
import re
import site
import sys


def canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def digest(path):
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return None
    return h.hexdigest()


def site_dirs():
    dirs = []
    for d in [*site.getsitepackages(), site.getusersitepackages()] if hasattr(site, "getsitepackages") else []:
        if os.path.isdir(d) and d not in dirs:
            dirs.append(d)
    for d in sys.path:
        if d.endswith("site-packages") and os.path.isdir(d) and d not in dirs:
            dirs.append(d)
    return dirs


def main(argv):
    with_files = "--files" in argv[1:]
    packages, files, locations = {}, {}, {}
    for d in md.distributions():
        name = d.metadata["Name"]
        if not name:
            continue
        key = canonical(name)
        if key in packages:
            continue
        packages[key] = d.version
        if with_files:
            entries = {}
            for f in d.files or ():
                p = str(f)
                if "__pycache__" in p or p.endswith(".pyc"):
                    continue
                entries[p] = digest(d.locate_file(f))
            files[key] = entries
            locations[key] = str(d.locate_file(""))
    try:
        pip = md.version("pip")
    except Exception:
        pip = None
    out: dict = {"prefix": sys.prefix, "executable": sys.executable, "packages": packages, "pip": pip}
    if with_files:
        tops = {}
        for sd in site_dirs():
            try:
                tops[sd] = sorted(os.listdir(sd))
            except OSError:
                tops[sd] = []
        out.update(files=files, locations=locations, site_tops=tops)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
