"""Write the recommended axolotl config fragment as YAML, atomically, with its comments."""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = ["render_yaml", "write_atomic"]


def render_yaml(config: Mapping[str, Any], comments: Sequence[str], header: Sequence[str]) -> str:
    """Render the keys in order with a header and backend comments above them."""
    from ruamel.yaml import YAML  # noqa: PLC0415 - keep `attn-install --help` fast

    yaml = YAML()
    yaml.default_flow_style = False
    buf = io.StringIO()
    yaml.dump(dict(config), buf)
    lines = [f"# {h}" for h in header] + [f"# {c}" for c in comments]
    return "\n".join(lines) + ("\n" if lines else "") + buf.getvalue()


def write_atomic(path: Path, text: str) -> None:
    """Write through a temporary file in the same directory, then rename over the target."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=str(path.parent or Path()))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
