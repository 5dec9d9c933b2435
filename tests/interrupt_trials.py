"""Send a signal to a real ``pairot`` console-script process and classify what happened.

Shared by ``tests/test_interrupts.py`` (CI) and ``benchmarks/bench_interrupts.py`` (by hand).
A trial starts ``pairot demo --out DIR`` (optionally over a previous output with
``--overwrite``) as a subprocess, sends one signal ``delay`` seconds after the start and
records the exit code, stderr, how long the process took to exit after the signal and what
is left in the output's parent folder.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

#: Seconds after the signal within which an exit 0 is a run that had already finished.
AT_EXIT_SECONDS = 0.2
#: The one line an interrupted run prints when it wrote nothing.
NO_OUTPUT_LINE = "pairot: interrupted; no output written"


def console_script() -> list[str]:
    """The ``pairot`` console script of the running interpreter's environment."""
    script = Path(sys.executable).with_name("pairot")
    if script.exists():
        return [str(script)]
    return [
        sys.executable,
        "-c",
        "import sys; from pairot.cli import console_main; sys.exit(console_main())",
    ]  # pragma: no cover - not installed as a script


#: Sets signal dispositions, then becomes the given command (``exec`` keeps default and
#: ignored dispositions). Used instead of ``preexec_fn``, which is unsafe in a process with
#: threads (JAX's, here).
_WITH_SIGNALS = (
    "import os, signal, sys\n"
    "for name in sys.argv[1].split(','):\n"
    "    signal.signal(getattr(signal, name), signal.SIG_DFL)\n"
    "for name in filter(None, sys.argv[2].split(',')):\n"
    "    signal.signal(getattr(signal, name), signal.SIG_IGN)\n"
    "os.execv(sys.argv[3], sys.argv[3:])\n"
)


def with_signals(command: list[str], *, ignore: tuple[str, ...] = ()) -> list[str]:
    """``command`` started with SIGINT and SIGTERM at their default action (a shell's
    background jobs start with SIGINT ignored, and Python keeps an ignored SIGINT ignored)
    and the signals named in ``ignore`` ignored."""
    executable = command[0] if os.path.isabs(command[0]) else shutil.which(command[0])
    return [
        sys.executable,
        "-c",
        _WITH_SIGNALS,
        "SIGINT,SIGTERM",
        ",".join(ignore),
        executable,
        *command[1:],
    ]


def folder_digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder``, keyed by relative path."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@dataclass
class Trial:
    """Outcome of one signalled run."""

    delay: float
    signum: int
    returncode: int
    stderr: str
    exit_after_signal: float
    leftovers: list[str] = field(default_factory=list)
    output_state: str = ""  # "absent", "old" (byte-identical), "new" (complete), "other"

    @property
    def outcome(self) -> str:
        """``clean``, ``completed`` (finished before the signal), ``swallowed`` (exit 0 after
        the signal), ``traceback`` (Python printed one), ``startup`` (ended silently by the
        signal's default action: it came before the handlers were installed), ``crash``
        (another signal death or an abort), ``leftover`` or ``other``."""
        if "Traceback (most recent call last)" in self.stderr:
            return "traceback"  # Python's own report, also when it then dies of the signal
        if self.returncode == -self.signum and not self.stderr:
            return "startup"  # the signal's default action, before pairot's handlers exist
        if self.returncode < 0 or self.returncode in (134, 139):
            return "crash"
        if self.returncode == 0:
            # A signal that reaches the process while it is already leaving (its last flag
            # check done, the kernel tearing it down) cannot change its exit code: exit 0
            # within AT_EXIT_SECONDS of the signal is a run that had finished.
            late = 0 <= self.exit_after_signal < AT_EXIT_SECONDS
            return "swallowed" if self.exit_after_signal >= 0 and not late else "completed"
        if self.leftovers:
            return "leftover"
        if self.returncode == 128 + self.signum:
            return "clean"
        return "other"


def run_trial(
    workdir: Path,
    delay: float,
    *,
    signum: int = signal.SIGINT,
    overwrite_from: Path | None = None,
    timeout: float = 120.0,
    env: dict[str, str] | None = None,
) -> Trial:
    """One ``pairot demo`` run in ``workdir`` sent ``signum`` after ``delay`` seconds.

    With ``overwrite_from`` (a previous output folder), that folder is copied to
    ``workdir/out`` first and the run uses ``--overwrite``; ``output_state`` then tells
    whether ``out`` still holds the old files byte for byte.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / "out"
    command = [*console_script(), "demo", "--out", str(out), "-q"]
    old = None
    if overwrite_from is not None:
        shutil.copytree(overwrite_from, out)
        old = folder_digest(out)
        command.append("--overwrite")
    process = subprocess.Popen(
        with_signals(command),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    signalled_at = None
    try:
        process.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        process.send_signal(signum)
        signalled_at = time.monotonic()
    stdout, stderr = process.communicate(timeout=timeout)
    ended = time.monotonic()
    leftovers = sorted(p.name for p in workdir.iterdir() if p.name != "out")
    if not out.exists():
        state = "absent"
    elif old is not None and folder_digest(out) == old:
        state = "old"
    elif (out / "run.json").is_file() and (out / "report.html").is_file():
        state = "new"
    else:
        state = "other"
    return Trial(
        delay=delay,
        signum=signum,
        returncode=process.returncode,
        stderr=stderr,
        exit_after_signal=-1.0 if signalled_at is None else ended - signalled_at,
        leftovers=leftovers,
        output_state=state,
    )


def clean_workdir(workdir: Path) -> None:
    """Remove a trial's folder (its output and anything left beside it)."""
    shutil.rmtree(workdir, ignore_errors=True)
    if workdir.exists():  # pragma: no cover - a file appeared while removing
        shutil.rmtree(workdir)


def environment() -> dict[str, str]:
    """The current environment, unbuffered, without a forced terminal."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    return env
