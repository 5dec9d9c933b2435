"""Interrupt trials of the ``pairot`` console script: how often a signal ends a run cleanly.

Runs ``pairot demo`` again and again, sending SIGINT (or SIGTERM) at evenly spread moments
from start-up to the end of a run, and counts the outcomes: ``clean`` (exit 128 + signal
number, one line, nothing left behind), ``completed`` (the run ended before the signal),
``swallowed`` (exit 0 later than 0.2 s after the signal; sooner, the process was already
leaving, and it counts as ``completed``), ``crash``, ``traceback``, ``startup`` (ended by
the signal's default action before pairot installed its handlers), ``leftover`` (a temporary
folder left next to ``--out``), ``other``. Prints the counts and the slowest exit after the
signal. Run by hand::

    python benchmarks/bench_interrupts.py --trials 34 [--signal TERM] [--overwrite]
"""

from __future__ import annotations

import argparse
import collections
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from interrupt_trials import clean_workdir, environment, run_trial  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=34)
    parser.add_argument("--signal", default="INT", choices=["INT", "TERM"])
    parser.add_argument("--overwrite", action="store_true", help="interrupt --overwrite runs")
    parser.add_argument(
        "--span", type=float, default=None, help="latest signal time, s (default: one full run)"
    )
    args = parser.parse_args()
    signum = getattr(signal, f"SIG{args.signal}")
    env = environment()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run_trial(root / "warm-up", 1e6, env=env)  # compile caches, file caches
        start = time.monotonic()
        full = run_trial(root / "full", 1e6, env=env)
        span = args.span or (time.monotonic() - start)
        print(f"full run: exit {full.returncode} in {span:.1f} s")
        previous = root / "full" / "out" if args.overwrite else None
        counts: collections.Counter[str] = collections.Counter()
        slowest = 0.0
        for k in range(args.trials):
            delay = 0.05 + (span - 0.05) * k / max(args.trials - 1, 1)
            trial = run_trial(
                root / f"t{k}", delay, signum=signum, overwrite_from=previous, env=env
            )
            counts[trial.outcome] += 1
            if trial.exit_after_signal >= 0:
                slowest = max(slowest, trial.exit_after_signal)
            last = trial.stderr.strip().splitlines()[-1:] or [""]
            print(
                f"{delay:6.2f} s: {trial.outcome:9s} exit {trial.returncode:4d} "
                f"{trial.exit_after_signal:6.2f} s after the signal, out {trial.output_state}, "
                f"stderr lines {len(trial.stderr.splitlines())}: {last[0][:90]}"
            )
            clean_workdir(root / f"t{k}")
    print(
        f"outcomes over {args.trials} trials (SIG{args.signal}): {dict(counts)}; slowest exit "
        f"after a signal {slowest:.2f} s"
    )


if __name__ == "__main__":
    main()
