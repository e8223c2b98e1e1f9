"""Turn an installed distribution back into a wheel, from its RECORD, for an exact offline restore.

Run by attn-install in the target Python before a step replaces that distribution:

    python attn_repack.py NAME OUTDIR

prints one JSON line {"wheel", "name", "version", "skipped"}. The wheel is written under a
temporary name and renamed when complete. Runs on Python >= 3.9; imports nothing from attn_installer.
"""

import base64
import hashlib
import importlib.metadata as md
import json
import os
import re
import sys
import zipfile

# pip writes these itself on install. direct_url.json is kept: a distribution installed from a path
# or URL (pip freeze: "name @ file://...") comes back with the same origin.
SKIP_INFO = ("RECORD", "INSTALLER", "REQUESTED", "WHEEL")


def main(argv):
    name, outdir = argv[1], argv[2]
    d = md.distribution(name)
    dist = re.sub(r"[-_.]+", "_", d.metadata["Name"])
    ver = d.version
    info = f"{dist}-{ver}.dist-info"
    data = f"{dist}-{ver}.data"
    path = os.path.join(outdir, f"{dist}-{ver}-py3-none-any.whl")
    record, skipped = [], []

    def add(zf, arc, blob):
        zf.writestr(arc, blob)
        digest = base64.urlsafe_b64encode(hashlib.sha256(blob).digest()).rstrip(b"=").decode()
        record.append(f"{arc},sha256={digest},{len(blob)}")

    part = path + f".part{os.getpid()}"
    try:
        with zipfile.ZipFile(part, "w", zipfile.ZIP_DEFLATED) as zf:
            for f in d.files or ():
                p = str(f)
                if "__pycache__" in p or p.endswith(".pyc"):
                    continue
                src = str(d.locate_file(f))
                if not os.path.isfile(src):
                    skipped.append(p)
                    continue
                parts = p.replace(os.sep, "/").split("/")
                base = parts[0]
                if base.endswith(".dist-info"):
                    if parts[-1] in SKIP_INFO:
                        continue
                    arc = info + "/" + "/".join(parts[1:])
                elif base == "..":
                    if "bin" in parts and parts.index("bin") < len(parts) - 1:
                        arc = data + "/scripts/" + parts[-1]
                    else:
                        skipped.append(p)
                        continue
                else:
                    arc = "/".join(parts)
                with open(src, "rb") as fh:
                    add(zf, arc, fh.read())
            wheel_meta = (b"Wheel-Version: 1.0\nGenerator: attn-install repack\nRoot-Is-Purelib: true\n"
                          b"Tag: py3-none-any\n")
            add(zf, info + "/WHEEL", wheel_meta)
            record.append(info + "/RECORD,,")
            zf.writestr(info + "/RECORD", "\n".join(record) + "\n")
        os.replace(part, path)
    finally:
        if os.path.exists(part):
            os.unlink(part)
    print(json.dumps({"wheel": path, "name": d.metadata["Name"], "version": ver, "skipped": skipped}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
