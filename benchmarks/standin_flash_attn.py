"""Build a stand-in flash-attn 2.8.3 wheel (stdlib only, no network): what a hollow or mis-built
wheel looks like to attn-install. For benchmarks/gpu_judge.sh (issue #14) and its CI dry run.

    python benchmarks/standin_flash_attn.py zeros  DIR   # flash_attn_func returns zeros (q * 0)
    python benchmarks/standin_flash_attn.py raises DIR   # its kernel raises at the first call

Both install as flash-attn 2.8.3 (the same version: only the installed files tell them apart) with
the flash_attn_func / flash_attn_varlen_func entry points attn-install calls. Prints the wheel's path.
The zeros output is differentiable (its gradients are zeros too), so bench can time a forward +
backward of it, as it timed the one the issue reports.
"""

from __future__ import annotations

import base64
import hashlib
import sys
import zipfile
from pathlib import Path

VERSION = "2.8.3"
BODY = {
    "zeros": '''"""Stand-in flash-attn (attn-install benchmarks/standin_flash_attn.py): returns zeros."""
__version__ = "{version}"
KIND = "zeros"


def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, **kwargs):
    return q * 0.0


def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q=None, max_seqlen_k=None,
                           dropout_p=0.0, softmax_scale=None, causal=False, **kwargs):
    return q * 0.0
''',
    "raises": '''"""Stand-in flash-attn (attn-install benchmarks/standin_flash_attn.py): its kernel fails at once."""
__version__ = "{version}"
KIND = "raises"


def _fail(*args, **kwargs):
    raise RuntimeError("CUDA error: no kernel image is available for execution on the device "
                       "(stand-in flash-attn whose kernel fails at the first call)")


flash_attn_func = _fail
flash_attn_varlen_func = _fail
''',
}


def _hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def build(kind: str, out_dir: Path) -> Path:
    files = {
        "flash_attn/__init__.py": BODY[kind].format(version=VERSION).encode(),
        f"flash_attn-{VERSION}.dist-info/METADATA": (f"Metadata-Version: 2.1\nName: flash-attn\nVersion: {VERSION}\n"
                                                     f"Summary: stand-in ({kind}) for attn-install tests\n").encode(),
        f"flash_attn-{VERSION}.dist-info/WHEEL": (b"Wheel-Version: 1.0\nGenerator: attn-install-standin\n"
                                                  b"Root-Is-Purelib: true\nTag: py3-none-any\n"),
    }
    record_name = f"flash_attn-{VERSION}.dist-info/RECORD"
    record = "".join(f"{name},{_hash(data)},{len(data)}\n" for name, data in files.items()) + f"{record_name},,\n"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / kind / f"flash_attn-{VERSION}-py3-none-any.whl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        zf.writestr(record_name, record)
    return path


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in BODY:
        print(f"usage: {argv[0]} zeros|raises DIR", file=sys.stderr)
        return 2
    print(build(argv[1], Path(argv[2])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
