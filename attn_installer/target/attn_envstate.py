"""The target environment as its own interpreter sees it: prefix, pip, every distribution, and the
folders pip installs into.

Run by attn-install in the target Python (``python -I``, from an empty temporary directory); prints
one JSON line: {"prefix", "executable", "pip", "packages": {name: version}, "roots": [folders]}.
``roots`` are the install scheme's purelib, platlib and scripts folders that exist (the ones pip
writes to), each once. With ``--files NAME,NAME``, also "files": {name: [absolute path of every
RECORD entry]} and "locations": {name: the folder they are relative to}, so a step's rollback can
copy exactly the files of the distributions it replaces. Runs on Python >= 3.9; imports nothing
from attn_installer.
"""

import importlib.metadata as md
import json
import os
import re
import sys
import sysconfig


def canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def real(path):
    """The path with its folders' links resolved (not the file's own: a link stays a link)."""
    path = os.path.abspath(path)
    return os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))


def roots():
    """purelib, platlib, scripts of the default install scheme (pip's), existing, each once."""
    paths = sysconfig.get_paths()
    out, seen = [], set()
    for key in ("purelib", "platlib", "scripts"):
        d = paths.get(key)
        if not d or not os.path.isdir(d):
            continue
        real = os.path.realpath(d)
        if real not in seen:
            seen.add(real)
            out.append(real)
    return out


def main(argv):
    wanted = set()
    if "--files" in argv[1:]:
        i = argv.index("--files")
        wanted = {canonical(n) for n in (argv[i + 1] if i + 1 < len(argv) else "").split(",") if n}
    packages, files, locations = {}, {}, {}
    for d in md.distributions():
        name = d.metadata["Name"]
        if not name:
            continue
        key = canonical(name)
        if key in packages:
            continue
        packages[key] = d.version
        if key in wanted:
            files[key] = [real(str(d.locate_file(f))) for f in d.files or ()]
            locations[key] = os.path.abspath(str(d.locate_file("")))
    try:
        pip = md.version("pip")
    except Exception:
        pip = None
    out = {"prefix": sys.prefix, "executable": sys.executable, "packages": packages, "pip": pip, "roots": roots()}
    if wanted:
        out.update(files=files, locations=locations)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
