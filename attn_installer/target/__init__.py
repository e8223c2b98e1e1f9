"""Programs that run inside the user's Python (the environment that holds torch), as real files.

They import nothing from attn_installer (it is not installed there) and run on Python >= 3.9:
``attn_calls`` (how each backend is called, the fp32 reference), ``attn_verify`` (the kernel check),
``attn_bench`` (the timing), ``attn_envstate`` (the installed distributions and their files) and
``attn_repack`` (an installed distribution back into a wheel). attn-install runs them as
``python -I -c BOOT DIR MODULE ARGS...`` (see :func:`argv`): the boot line puts this folder first on
sys.path and runs the module as __main__; each also runs standalone (``python attn_verify.py ...``).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["DIR", "argv"]

DIR = Path(__file__).resolve().parent
BOOT = ("import runpy, sys; sys.path.insert(0, sys.argv[1]); m = sys.argv[2]; "
        "sys.argv = [m + '.py'] + sys.argv[3:]; runpy.run_module(m, run_name='__main__', alter_sys=True)")


def argv(python: str, module: str, *args: str) -> tuple[str, ...]:
    """The command line that runs target program *module* (attn_verify, ...) in *python*."""
    return (python, "-I", "-c", BOOT, str(DIR), module, *args)
