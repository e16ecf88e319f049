"""The UI tier's verdict on one Blender run: the driver's checks, Blender's output, and what
the worker left in its run folder. Prints a summary; exit status 1 on any failure.

    python tests/ui/verdict.py --name NAME --log BLENDER_LOG --result RESULT_JSON --run-dir DIR --exit-status N
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

# Lines of Blender's output that mean something went wrong in Python or an operator.
PROBLEMS = re.compile(r"Traceback \(most recent call last\)|^Error:|^ERROR|Exception in|DeprecationWarning|"
                      r"Warning: .*(deprecated|removed)|^Python: |^\S*Error: ", re.MULTILINE)


def problems_in(log: str) -> list[str]:
    return [line for line in log.splitlines() if PROBLEMS.search(line)]


def leftovers(run_dir: Path) -> list[str]:
    """Worker files still in the run folders once the worker has exited (F9)."""
    found = []
    for folder in (run_dir / "runtime", run_dir / "data"):
        found += [str(p.relative_to(run_dir)) for p in folder.rglob("*") if p.suffix in (".lock", ".log", ".json")
                  and p.name != "backend.json"]
    return sorted(found)


def main() -> int:
    parser = argparse.ArgumentParser()
    for name in ("--name", "--log", "--result", "--run-dir"):
        parser.add_argument(name, required=True)
    parser.add_argument("--exit-status", type=int, required=True)
    args = parser.parse_args()
    failures = []
    try:
        result = json.loads(Path(args.result).read_text())
    except (OSError, ValueError) as exc:
        result = {"checks": [], "error": f"no result from the driver ({exc})", "done": False}
    for check in result["checks"]:
        if not check["passed"]:
            failures.append(f"check failed: {check['name']}: {check['detail']}")
    if result.get("error"):
        failures.append(f"driver error: {result['error']}")
    elif not result.get("done"):
        failures.append("the driver did not finish")
    if args.exit_status != 0:
        failures.append(f"Blender exited with status {args.exit_status}")
    log = Path(args.log).read_text(errors="replace")
    failures += [f"Blender's output: {line}" for line in problems_in(log)]
    failures += [f"F9 the worker left {path}" for path in leftovers(Path(args.run_dir))]
    passed = sum(c["passed"] for c in result["checks"])
    print(f"{args.name} ({result.get('blender', '?')}): {passed}/{len(result['checks'])} checks passed", flush=True)
    for failure in failures:
        print(f"  {failure}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
