"""Fuzz the device commands at scale: 10,000 mutated models and 1,000 mutated photos.

The same mutations, runs and verdicts as the suite's standing guard (``tests/test_fuzz.py``):
each mutated model goes through ``edgenn inspect`` (text, ``--json`` or ``--target``) and
``edgenn predict``, every fourth also through ``edgenn tag --dry-run``; each mutated photo through
``edgenn predict`` and ``edgenn tag``. Every run has a time limit and an address-space limit.
The goal is 0 crashes, 0 hangs and 0 noisy runs: every failure exactly one line on stderr, exit 1.

Run (device environment, niced: it keeps two cores busy for a while):

    nice -n 10 .venv-device/bin/python benchmarks/fuzz.py
    nice -n 10 .venv-device/bin/python benchmarks/fuzz.py --models 500 --photos 100 --jobs 1

Prints a table of verdict counts and writes ``benchmarks/results/fuzz.json`` (with the first
bad runs, if any, to reproduce them).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import machine, table, write_results

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.test_fuzz import (  # noqa: E402 - the repository root goes on the path first
    MEMORY_LIMIT,
    TIME_LIMIT_S,
    VERDICTS,
    Outcome,
    make_cases,
    problems,
    run_cases,
    summary,
)


def run_parallel(cases: list, jobs: int, time_limit: float) -> list[Outcome]:
    """Run the cases in ``jobs`` driver children at once (threads wait on them), in order."""
    chunks = [cases[i::jobs] for i in range(jobs)]
    results: list[list[Outcome]] = [[] for _ in range(jobs)]
    done = [0] * jobs
    start = time.monotonic()

    def work(i: int) -> None:
        def progress(n: int, total: int) -> None:
            done[i] = n

        results[i] = run_cases(chunks[i], time_limit, MEMORY_LIMIT, progress)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(jobs)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        time.sleep(5)
        rate = sum(done) / max(time.monotonic() - start, 1e-9)
        print(f"fuzz: {sum(done)}/{len(cases)} runs, {rate:.1f}/s", file=sys.stderr, flush=True)
    outcomes = [o for chunk in results for o in chunk]
    return sorted(outcomes, key=lambda o: o.case.id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=10_000)
    parser.add_argument("--photos", type=int, default=1_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2, help="Driver children at once.")
    parser.add_argument("--time-limit", type=float, default=TIME_LIMIT_S)
    args = parser.parse_args()
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="edgenn-fuzz-") as tmp:
        cases = make_cases(Path(tmp), args.models, args.photos, args.seed)
        outcomes = run_parallel(cases, max(args.jobs, 1), args.time_limit)
    seconds = round(time.monotonic() - start, 1)
    counts = summary(outcomes)
    rows = [
        {"inputs": f"{args.models:,} models", "runs": sum(counts["model"].values())},
        {"inputs": f"{args.photos:,} photos", "runs": sum(counts["photo"].values())},
    ]
    for row, kind in zip(rows, ("model", "photo")):
        row.update(counts[kind])
    print(table(rows, [("inputs", "inputs"), ("runs", "runs"), *[(v, v) for v in VERDICTS]]))
    bad = problems(outcomes, limit=50)
    if bad:
        print("\nfirst bad runs:\n" + bad)
    doc = {
        "machine": machine(),
        "seed": args.seed,
        "time_limit_s": args.time_limit,
        "memory_limit_bytes": MEMORY_LIMIT,
        "seconds": seconds,
        "counts": counts,
        "bad_runs": bad.splitlines(),
    }
    info = doc["machine"]
    print(
        f"\nmachine: {info['cpu']}, {info['cores']} cores, Python {info['python']}, {info['date']}"
    )
    print(f"{len(outcomes):,} runs in {seconds:,} s; wrote {write_results('fuzz', doc)}")


if __name__ == "__main__":
    main()
