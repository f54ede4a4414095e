"""Code-sandbox throughput: samples/s of the kernel sandbox (bubblewrap + separate judge) against
the old in-interpreter sandbox (alignlab/eval/sandbox.py as of commit 655e87c, before issue 13, read
from git history), same jobs, same machine, same run. Also prints both pass rates, which must match.

    python bench/sandbox_throughput.py [--repeats 4] [--workers 2]

Jobs: every example of the built-in code set (alignlab/assets/code_qa_sample.jsonl), once with the
reference answer and once with a wrong one, repeated. The legacy sandbox is a baseline only: it
is broken (issue 13) and must not be used for anything else.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from alignlab.eval import sandbox
from alignlab.eval.metrics.code import build_program

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "alignlab" / "assets" / "code_qa_sample.jsonl"
LEGACY_COMMIT = "655e87c"  # the last commit with the in-interpreter sandbox


def load_legacy():
    """The pre-issue-13 sandbox module, from git history (a baseline only: it is broken, see issue 13)."""
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{LEGACY_COMMIT}:alignlab/eval/sandbox.py"],
                         capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp(prefix="legacy-sandbox-")) / "legacy_sandbox.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("legacy_sandbox", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["legacy_sandbox"] = mod
    spec.loader.exec_module(mod)
    return mod


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    rows = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    jobs = [(build_program(code, r["setup"]), r["test"]) for r in rows for code in (r["reference"], "None")]
    jobs = jobs * args.repeats
    ok, why = sandbox.sandbox_status()
    if not ok:
        raise SystemExit(why)
    legacy = load_legacy()
    legacy.run_many(jobs[:4], workers=args.workers)  # warm both (probes, page cache)
    sandbox.run_many(jobs[:4], workers=args.workers)
    out = {}
    for name, mod in (("legacy (audit hook + token)", legacy), ("bwrap + judge", sandbox)):
        t0 = time.perf_counter()
        res = mod.run_many(jobs, workers=args.workers)
        dt = time.perf_counter() - t0
        out[name] = (len(jobs) / dt, sum(r.passed for r in res) / len(res), [r.status for r in res])
        print(f"{name:30s} {len(jobs)} samples in {dt:6.2f} s = {len(jobs) / dt:6.2f} samples/s, "
              f"pass rate {out[name][1]:.3f}")
    (old_sps, old_rate, old_st), (new_sps, new_rate, new_st) = out.values()
    print(f"ratio new/legacy throughput: {new_sps / old_sps:.2f}x (slowdown {old_sps / new_sps:.2f}x); "
          f"identical statuses: {old_st == new_st}")


if __name__ == "__main__":
    main()
