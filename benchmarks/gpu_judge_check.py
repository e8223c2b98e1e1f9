"""Read what benchmarks/gpu_judge.sh left in OUTDIR and print the summary of issue #14's device checks.

    python benchmarks/gpu_judge_check.py OUTDIR [--dry]

One PASS / FAIL line per expectation (the stand-ins are rejected or reported, never recommended,
never installed; the real backends pass every verify case), then the figures worth keeping: the
bench table with its rejected rows, one line per verify case, the ratio of the recommended
backend's time to the best accepted one. Exit 1 when any expectation failed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from attn_installer.verify import VerifyResult, case_lines  # noqa: E402

FA2 = "flash_attention_2"


class Checks:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.lines: list[str] = []
        self.failed = 0

    def text(self, name: str) -> str:
        try:
            return (self.out / name).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def json(self, name: str) -> Any:
        text = self.text(name).strip()
        start = min([i for i in (text.find("{"), text.find("[")) if i >= 0], default=-1)
        if start < 0:
            return None
        try:
            return json.loads(text[start:])
        except ValueError:
            return None

    def rc(self, name: str) -> Optional[int]:
        t = self.text(f"{name}.rc").strip()
        return int(t) if t.lstrip("-").isdigit() else None

    def check(self, ok: bool, what: str, why: str = "") -> None:
        self.lines.append(f"{'PASS' if ok else 'FAIL'}  {what}" + (f": {why}" if why and not ok else ""))
        self.failed += 0 if ok else 1

    def last_err(self, name: str) -> str:
        lines = [ln for ln in self.text(f"{name}.err").splitlines() if ln.strip()]
        return lines[-1][:200] if lines else "(no stderr)"


def stand_ins(c: Checks) -> None:
    zeros, raises = c.text("zeros.txt").strip(), c.text("raises.txt").strip()
    c.check(zeros == "installed flash-attn 2.8.3 zeros" and raises == "installed flash-attn 2.8.3 raises",
            "both stand-ins install as flash-attn 2.8.3", f"{zeros!r} / {raises!r}")
    a, b = c.text("digest-zeros.txt").strip(), c.text("digest-raises.txt").strip()
    c.check(bool(a) and bool(b) and a != b, f"same version, another build digest ({a or '?'} -> {b or '?'})",
            "the digest must change when the installed files do")


def fa2_result(bench: Any) -> Optional[dict]:
    for r in (bench or {}).get("results", []):
        if r.get("backend") == FA2 and r.get("variant") is None:
            return r
    return None


def recommended(c: Checks, name: str) -> Optional[str]:
    plan = c.json(f"{name}.out")
    return plan.get("recommended") if isinstance(plan, dict) else None


def device(c: Checks) -> None:
    v = c.json("verify-zeros.out")
    status = v[0].get("status") if isinstance(v, list) and v else None
    c.check(c.rc("verify-zeros") == 7 and status == "failed", "verify fails the zeros stand-in (exit 7)",
            f"exit {c.rc('verify-zeros')}, status {status}: {c.last_err('verify-zeros')}")
    r = fa2_result(c.json("bench-zeros.out"))
    c.check(r is not None and r.get("status") == "rejected", "bench rejects the zeros stand-in",
            f"{r and r.get('status')}: {r and r.get('detail')}")
    for name, when in (("plan-zeros", "with the zeros stand-in"), ("plan-swapped", "after the swap (cached bench)"),
                       ("plan-raises", "with the raising stand-in")):
        pick = recommended(c, name)
        c.check(pick is not None and pick != FA2, f"plan --measured {when} recommends {pick}, not {FA2}",
                c.last_err(name))
    r = fa2_result(c.json("bench-raises.out"))
    c.check(r is not None and r.get("status") == "error", "bench reports the raising stand-in as an error",
            f"{r and r.get('status')}: {r and r.get('detail')}")
    cfg = c.text("auto-config.yaml")
    c.check(bool(cfg) and f"attn_implementation: {FA2}" not in cfg and c.rc("auto") == 0,
            "--auto writes a config for another backend and installs neither stand-in",
            f"exit {c.rc('auto')}: {c.last_err('auto')}")
    for name in ("verify-real", "verify-model"):
        results = c.json(f"{name}.out") or []
        for res in results if isinstance(results, list) else []:
            cases = res.get("cases") or []
            names = [x.get("name", "") for x in cases]
            kinds = {"gqa", "mqa", "non-causal"} | ({"varlen"} if res.get("backend") != "sdpa" else set())
            covered = all(any(k in n for n in names) for k in kinds)
            c.check(res.get("status") == "passed" and covered,
                    f"verify {res.get('backend')} passes {len(cases)} cases ({', '.join(sorted(kinds))})",
                    f"{res.get('status')}: {res.get('detail')}")
        if not results:
            c.check(False, f"{name} printed results", c.last_err(name))


def figures(c: Checks) -> list[str]:
    out = ["", "----- bench with the zeros stand-in (table)", c.text("bench-zeros.txt").rstrip()]
    for name in ("verify-real", "verify-model", "verify-zeros"):
        results = c.json(f"{name}.out")
        for res in results if isinstance(results, list) else []:
            vr = VerifyResult(str(res.get("backend")), str(res.get("status")), str(res.get("detail", "")), res)
            out.append(f"----- {name}: {vr.backend} on {res.get('gpu')}: {vr.status}: {vr.detail}")
            out += case_lines(vr)
    out += ["", "----- bench_ratio.py on this bench", c.text("ratio.out").rstrip()]
    return out


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(f"usage: {argv[0]} OUTDIR [--dry]", file=sys.stderr)
        return 2
    c = Checks(Path(argv[1]))
    dry = "--dry" in argv[2:]
    stand_ins(c)
    if not dry:
        device(c)
    print("\n".join(c.lines))
    if not dry:
        print("\n".join(figures(c)))
    print(f"\n{len(c.lines) - c.failed} passed, {c.failed} failed" + (" (dry: no GPU steps)" if dry else ""))
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
