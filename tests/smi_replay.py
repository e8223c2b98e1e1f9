"""A fake nvidia-smi that answers from one machine's recorded outputs (tests/fixtures/probe-corpus).

It answers only what was recorded on that machine:

- ``--query-gpu=F1,F2,... --format=csv[,noheader][,nounits]`` from a recorded query of *every* field
  (``nvidia-smi --query-gpu=<long list> --format=csv``, header and units included, as
  nvidia_gpu_exporter records it): the columns asked for, in the order asked, with the header and
  units dropped when the format says so. That is the same table narrowed, not new output;
- with ``query_error``: any query naming a field in ``rejects`` prints that recorded error (the exit
  status of the recorded error was not recorded: 2 is used);
- ``-q -x``, ``-L`` and the plain banner print their recorded files;
- with ``failure``: every command prints that recorded failure (exit status 9: not recorded either).

Anything else was not recorded, and the fake says so on stderr with exit status 1. The same logic
runs as a :class:`tests.conftest.FakeRunner`-like runner (unit tests) and as an executable on PATH
(``python tests/smi_replay.py RECORDING.json ARGS...``, CLI tests).
"""

from __future__ import annotations

import csv
import io
import json
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from attn_installer.runner import Completed

CORPUS = Path(__file__).parent / "fixtures" / "probe-corpus"


@dataclass
class Recording:
    query: Optional[str] = None
    """A recorded ``--query-gpu=<every field> --format=csv`` (relative to the corpus)."""
    query_error: Optional[str] = None
    rejects: tuple[str, ...] = ("compute_cap",)
    xml: Optional[str] = None
    banner: Optional[str] = None
    listing: Optional[str] = None
    failure: Optional[str] = None
    strip_prompt: bool = field(default=True)
    """Drop the ``$ nvidia-smi ...`` prompt lines the pasted captures carry."""

    def text(self, rel: str) -> str:
        raw = (CORPUS / rel).read_text(encoding="utf-8", errors="replace")
        if self.strip_prompt:
            raw = "".join(ln for ln in raw.splitlines(keepends=True) if not ln.startswith("$ "))
        return raw


def project(recorded: str, fields: list[str], noheader: bool, nounits: bool) -> str:
    """The recorded full query narrowed to *fields* (KeyError for a field the recording lacks)."""
    rows = list(csv.reader(io.StringIO(recorded), skipinitialspace=True))
    header = [re.sub(r"\s*\[.*\]$", "", h.strip()) for h in rows[0]]
    cols = [header.index(f) for f in fields]
    out = [] if noheader else [", ".join(rows[0][c].strip() for c in cols)]
    for row in rows[1:]:
        if not row:
            continue
        values = []
        for c in cols:
            v = row[c].strip()
            if nounits:
                v = re.sub(r"\s+(MiB|W|MHz|%|C|us)$", "", v)
            values.append(v)
        out.append(", ".join(values))
    return "\n".join(out) + "\n"


def answer(rec: Recording, argv: list[str]) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``nvidia-smi ARGV`` on the recorded machine."""
    if rec.failure:
        return 9, rec.text(rec.failure), ""
    args = argv[1:]
    query = next((a for a in args if a.startswith("--query-gpu=")), None)
    if query is not None:
        fields = query.split("=", 1)[1].split(",")
        fmt = next((a.split("=", 1)[1] for a in args if a.startswith("--format=")), "csv").split(",")
        if rec.query_error and any(f in rec.rejects for f in fields):
            return 2, rec.text(rec.query_error), ""
        if rec.query:
            try:
                return 0, project(rec.text(rec.query), fields, "noheader" in fmt, "nounits" in fmt), ""
            except (KeyError, ValueError):
                pass
        return 1, "", f"fake nvidia-smi: {' '.join(args)} not recorded for this machine\n"
    recorded = {("-q", "-x"): rec.xml, ("-L",): rec.listing, (): rec.banner}.get(tuple(args))
    if recorded:
        return 0, rec.text(recorded), ""
    return 1, "", f"fake nvidia-smi: {' '.join(args) or '(no arguments)'} not recorded for this machine\n"


class ReplayRunner:
    """Runs ``nvidia-smi`` from a recording and other commands from a table, like FakeRunner."""

    def __init__(self, rec: Recording, others: Optional[dict[tuple[str, ...], tuple[int, str]]] = None):
        self.rec = rec
        self.others = others or {}
        self.calls: list[tuple[str, ...]] = []

    def run(self, argv, *, timeout, env=None, cwd=None, on_line=None, on_idle=None, idle_seconds=600.0):
        argv = tuple(argv)
        self.calls.append(argv)
        if argv[0] == "nvidia-smi":
            rc, out, err = answer(self.rec, list(argv))
            return Completed(argv, rc, out, err, 0.01)
        for prefix, (rc, out) in self.others.items():
            if argv[: len(prefix)] == prefix:
                return Completed(argv, rc, out, "", 0.01, timed_out=rc == 124)
        return Completed(argv, 127, "", f"{argv[0]}: command not found\n", 0.0, not_found=True)


def install(rec: Recording, bindir: Path) -> Path:
    """Put a ``nvidia-smi`` executable answering from *rec* in *bindir*."""
    bindir.mkdir(parents=True, exist_ok=True)
    spec = bindir / "nvidia-smi.json"
    spec.write_text(json.dumps(asdict(rec)))
    exe = bindir / "nvidia-smi"
    exe.write_text(f"#!/bin/sh\nexec {sys.executable} {Path(__file__).resolve()} {spec} \"$@\"\n")
    exe.chmod(0o755)
    return bindir


def main(argv: list[str]) -> int:
    data = json.loads(Path(argv[1]).read_text())
    data["rejects"] = tuple(data.get("rejects", ("compute_cap",)))
    rc, out, err = answer(Recording(**data), ["nvidia-smi", *argv[2:]])
    sys.stdout.write(out)
    sys.stderr.write(err)
    return rc


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    raise SystemExit(main(sys.argv))
