"""Interrupting the ``pairot`` console script, tested the way it failed: a real subprocess,
signals at many moments of a run (start-up, preprocessing, each solver phase, writing), then
the exit code, the one line on stderr and the file system afterwards."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from interrupt_trials import (
    NO_OUTPUT_LINE,
    clean_workdir,
    console_script,
    environment,
    folder_digest,
    run_trial,
    with_signals,
)

from pairot._run import OutputFolder, remove_stale_folders

#: Signal times spread over one run; every third trial sends SIGTERM instead of SIGINT and
#: every other one interrupts an ``--overwrite`` of an earlier output.
N_TRIALS = 30
#: The first signal time, s. Before the console script installs its handlers (about 0.1 s
#: after the interpreter starts: Python's own start-up and ``import pairot.cli``) Python's
#: default handler is still in place; benchmarks/bench_interrupts.py measures from 0.05 s.
FIRST = 0.3


#: Trials run two at a time (CI has 2 cores); the signal times come from runs timed so too.
WORKERS = 2


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """A complete ``pairot demo`` output and the duration of a run while another one runs
    beside it (as the trials do), timed after a first run that fills the compile caches."""
    env = environment()
    run_trial(tmp_path_factory.mktemp("warm-up"), 1e6, env=env)
    folders = [tmp_path_factory.mktemp(f"full{k}") for k in range(WORKERS)]
    start = time.monotonic()
    with ThreadPoolExecutor(WORKERS) as pool:
        trials = list(pool.map(lambda folder: run_trial(folder, 1e6, env=env), folders))
    duration = time.monotonic() - start
    for trial in trials:
        assert trial.returncode == 0, trial.stderr
    return folders[0] / "out", duration


def _expected_line(trial) -> str:
    lines = trial.stderr.strip().splitlines()
    assert len(lines) == 1, trial.stderr
    return lines[0]


def test_signals_at_many_moments_end_the_run_cleanly(full_run, tmp_path):
    previous, duration = full_run
    env = environment()
    plans = []
    for k in range(N_TRIALS):
        delay = FIRST + (0.97 * duration - FIRST) * k / (N_TRIALS - 1)
        signum = signal.SIGTERM if k % 3 == 2 else signal.SIGINT
        overwrite = previous if k % 2 else None
        plans.append((k, delay, signum, overwrite))

    def trial_of(plan):
        k, delay, signum, overwrite = plan
        workdir = tmp_path / f"t{k}"
        trial = run_trial(workdir, delay, signum=signum, overwrite_from=overwrite, env=env)
        clean_workdir(workdir)
        return trial

    # trial k and k + N/2 run side by side: early and late signal times overlap
    order = [k for pair in zip(range(N_TRIALS // 2), range(N_TRIALS // 2, N_TRIALS)) for k in pair]
    with ThreadPoolExecutor(WORKERS) as pool:
        trials = dict(zip(order, pool.map(trial_of, [plans[k] for k in order])))
    outcomes = []
    for k, delay, signum, overwrite in plans:
        trial = trials[k]
        outcomes.append(trial.outcome)
        context = f"trial {k}: signal {signum} after {delay:.2f} s: {trial.stderr!r}"
        assert trial.outcome in ("clean", "completed"), context
        assert trial.leftovers == [], context
        if trial.outcome == "completed":
            assert trial.output_state == "new", context
        else:
            assert trial.returncode == 128 + signum, context
            assert trial.exit_after_signal < 10, context  # honoured within about a second
            line = _expected_line(trial)
            reason = "interrupted" if signum == signal.SIGINT else "stopped by SIGTERM"
            if "after the run had finished" in line:
                assert line.startswith(f"pairot: {reason} after the run had finished"), context
                assert trial.output_state == "new", context
            else:
                assert line == NO_OUTPUT_LINE.replace("interrupted", reason), context
                assert trial.output_state == ("old" if overwrite else "absent"), context
    # the signals really fell inside runs, from start-up on. Trials whose signal came after
    # the run had finished are "completed"; how many depends on how loaded the machine was
    # while full_run measured the duration against while the trials ran (the suite runs on
    # two pytest-xdist workers), so at least half of them, not nearly all, must be clean.
    assert outcomes.count("clean") >= N_TRIALS // 2, outcomes


def test_a_killed_run_leaves_a_folder_that_the_next_run_removes(full_run, tmp_path):
    """SIGKILL cannot be handled: the staging folder stays, and the next run removes it."""
    previous, duration = full_run
    out = tmp_path / "out"
    process = subprocess.Popen(
        [*console_script(), "demo", "--out", str(out), "-q"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=environment(),
    )
    deadline = time.monotonic() + 60
    while not [p for p in tmp_path.iterdir() if ".pairot-tmp-" in p.name]:
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    process.kill()
    process.wait(timeout=60)
    left = [p for p in tmp_path.iterdir() if ".pairot-tmp-" in p.name]
    assert len(left) == 1 and not out.exists()
    old = time.time() - 3600
    os.utime(left[0], (old, old))  # pretend it was left an hour ago
    done = subprocess.run(
        [*console_script(), "demo", "--out", str(out), "-q"],
        capture_output=True,
        text=True,
        env=environment(),
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert folder_digest(out).keys() == folder_digest(previous).keys()


def _make_folder(parent: Path, name: str, *, age: float = 3600.0) -> Path:
    folder = parent / name
    folder.mkdir()
    (folder / "mapping.parquet").write_bytes(b"partial")
    when = time.time() - age
    os.utime(folder, (when, when))
    return folder


def test_stale_folders_are_removed_and_live_or_foreign_ones_kept(tmp_path):
    stale = _make_folder(tmp_path, ".out.pairot-tmp-0123abcd")
    other_out = _make_folder(tmp_path, ".other.pairot-tmp-89abcdef")
    young = _make_folder(tmp_path, ".out.pairot-tmp-00000001", age=0.0)
    live = _make_folder(tmp_path, ".out.pairot-tmp-00000002")
    foreign = _make_folder(tmp_path, ".out.pairot-tmp-backup")  # not pairot's naming
    user = _make_folder(tmp_path, "results")
    descriptor = os.open(live, os.O_RDONLY)
    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a pairot run still writing it
    try:
        removed = remove_stale_folders(tmp_path)
    finally:
        os.close(descriptor)
    assert sorted(removed) == sorted([stale, other_out])
    assert not stale.exists() and not other_out.exists()
    assert young.exists() and live.exists() and foreign.exists() and user.exists()


def test_a_previous_output_caught_mid_swap_is_restored(tmp_path):
    """A run killed between moving the old output aside and the new one in: the old output
    waits in ``.OUT.pairot-old-HEX/OUT`` and comes back."""
    backup = _make_folder(tmp_path, ".out.pairot-old-0badcafe")
    saved = backup / "out"
    saved.mkdir()
    (saved / "run.json").write_text("{}")
    when = time.time() - 3600
    os.utime(backup, (when, when))
    with OutputFolder(tmp_path / "out", overwrite=True) as staging:
        assert staging.path.parent == tmp_path
        assert (tmp_path / "out" / "run.json").read_text() == "{}"
        assert not backup.exists()


def test_cli_rejects_quiet_with_verbose(tmp_path):
    done = subprocess.run(
        [*console_script(), "demo", "--out", str(tmp_path / "o"), "-q", "-v"],
        capture_output=True,
        text=True,
        env=environment(),
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "pairot: error: argument -v/--verbose: not allowed with argument -q/--quiet (see "
        "'pairot demo --help')"
    ]
    assert not (tmp_path / "o").exists()


def test_a_signal_ignored_at_start_stays_ignored(tmp_path):
    """Under ``nohup`` SIGHUP is ignored: the run must not start honouring it."""
    out = tmp_path / "out"
    process = subprocess.Popen(
        with_signals([*console_script(), "demo", "--out", str(out), "-q"], ignore=("SIGHUP",)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(),
    )
    time.sleep(2.0)
    process.send_signal(signal.SIGHUP)
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr
    assert (out / "run.json").is_file()


def test_the_line_after_the_outputs_were_moved_into_place(monkeypatch, capfd):
    """A signal that lands while the finished outputs are moved into place: the line says
    that they are complete, and where."""
    from pairot import _interrupt

    monkeypatch.setattr(_interrupt, "_announced", False)
    monkeypatch.setattr(_interrupt, "_committed", [])
    monkeypatch.setattr(_interrupt, "_folders", {})
    _interrupt.register_folder(Path("/tmp/.out.pairot-tmp-01234567"))
    _interrupt.unregister_folder(
        Path("/tmp/.out.pairot-tmp-01234567"), committed_as=Path("/tmp/out")
    )
    assert _interrupt.announce(signal.SIGTERM) == 143
    assert _interrupt.announce(signal.SIGTERM) == 143  # the line is printed once
    assert capfd.readouterr().err == (
        "pairot: stopped by SIGTERM after the run had finished; the outputs in /tmp/out are "
        "complete\n"
    )
