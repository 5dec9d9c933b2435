"""Interrupts (Ctrl-C, SIGTERM) that end pairot's long work cleanly, between chunks of work.

A signal that raises ``KeyboardInterrupt`` wherever the interpreter happens to be can land
inside a garbage-collector callback of JAX (where it is printed and swallowed), inside a
half-finished library call (leaving broken state behind), or not at all for minutes while a
long device computation runs. pairot therefore turns signals into a *request*:

- :func:`check` raises ``KeyboardInterrupt`` once a request is pending. Every long loop of
  pairot calls it between chunks of work (Sinkhorn dispatches, aggregation blocks, DE over
  clusters, AUROC over genes), and every chunk is kept short, so a request is honoured within
  about a second.
- :func:`interruptible` wraps pairot's long public calls (``preprocess_adatas``,
  ``DatasetMap.solve``, ...). In the main thread, while Python's default SIGINT handler is in
  place (a script, a notebook), it replaces it by one that records the request; a second
  Ctrl-C raises ``KeyboardInterrupt`` at once, as before. Handlers set by the caller are left
  alone.
- The command line (:func:`install_process_handlers`) records SIGINT, SIGTERM and SIGHUP the
  same way and adds a watchdog thread woken by the signal itself (``signal.set_wakeup_fd``),
  so that even when the main thread is stuck in one long native call the process ends within
  :data:`GRACE_SECONDS`: the watchdog removes the temporary folders registered with
  :func:`register_folder`, prints one line and leaves with ``os._exit(128 + signal)``,
  skipping an interpreter shutdown with native threads still running. Moving finished
  outputs into place runs inside :func:`critical`, which the watchdog waits for, so an
  interrupted ``--overwrite`` keeps either the old or the new results, whole.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ._logging import logger

__all__ = [
    "GRACE_SECONDS",
    "announce",
    "check",
    "critical",
    "discard_folder",
    "finish_process",
    "install_process_handlers",
    "interruptible",
    "interruptible_call",
    "register_folder",
    "remove_folder",
    "requested",
    "unregister_folder",
]

#: Seconds the command line waits for the main thread to stop at a safe point before the
#: watchdog ends the process itself.
GRACE_SECONDS = 1.0

_requested: int | None = None
_state_lock = threading.Lock()
_critical_lock = threading.RLock()  # commit() creates its backup folder inside it
_exit_lock = threading.Lock()
_folders: dict[Path, int | None] = {}  # temporary folder -> open descriptor holding its lock
_committed: list[Path] = []
_announced = False
_kept: list[str] = []  # what an interrupted command leaves on purpose (resumable work)
_process_handlers = False


def requested() -> int | None:
    """The number of the signal whose interrupt is pending, or ``None``."""
    return _requested


def _request(signum: int) -> None:
    # No lock: this runs inside signal handlers, which Python runs in the main thread between
    # two bytecodes, possibly while that thread holds any lock of this module.
    global _requested
    if _requested is None:
        _requested = int(signum)


def _clear() -> None:
    global _requested
    _requested = None


def check() -> None:
    """Raise ``KeyboardInterrupt`` if an interrupt is pending (a safe point of long work)."""
    if _requested is not None:
        raise KeyboardInterrupt


# ------------------------------------------------------------------------------ library use
_depth = 0


def _notebook_handler(signum, frame) -> None:
    if _requested is not None:  # a second Ctrl-C: the caller insists
        raise KeyboardInterrupt
    _request(signum)
    logger.warning(
        "Interrupt received; pairot stops at the next safe point (Ctrl-C again to stop at once)."
    )


@contextmanager
def interruptible() -> Iterator[None]:
    """Let Ctrl-C stop the enclosed pairot work at its next safe point (see module docs).

    Re-entrant. Outside the main thread, or when the caller has its own SIGINT handler, it
    changes nothing. An interrupt that arrives after the last safe point still raises
    ``KeyboardInterrupt`` when the block ends: it is never swallowed.
    """
    global _depth
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    install = (
        _depth == 0
        and not _process_handlers
        and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    )
    _depth += 1
    previous = signal.signal(signal.SIGINT, _notebook_handler) if install else None
    try:
        yield
        if install:
            check()
    finally:
        _depth -= 1
        if install:
            signal.signal(signal.SIGINT, previous)
            _clear()


def interruptible_call(function: Callable) -> Callable:
    """Decorator: run ``function`` inside :func:`interruptible`."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with interruptible():
            return function(*args, **kwargs)

    return wrapper


# ------------------------------------------------------------------------- temporary folders
def register_folder(path: Path, descriptor: int | None = None) -> None:
    """Remove ``path`` if the process is interrupted; ``descriptor`` is closed with it."""
    with _state_lock:
        _folders[Path(path)] = descriptor


def unregister_folder(path: Path, *, committed_as: Path | None = None) -> None:
    """Forget ``path``: removed, or moved into place as the new output ``committed_as``."""
    with _state_lock:
        descriptor = _folders.pop(Path(path), None)
        if committed_as is not None:
            _committed.append(Path(committed_as))
    if descriptor is not None:
        try:
            os.close(descriptor)
        except OSError:  # pragma: no cover - already closed
            pass


def remove_folder(path: Path) -> None:
    """Remove a folder tree, also while another thread may still be writing files into it."""
    for _ in range(100):
        shutil.rmtree(path, ignore_errors=True)
        if not os.path.lexists(path):
            return
        time.sleep(0.01)  # pragma: no cover - a file appeared while removing


def discard_folder(path: Path) -> None:
    """Remove a registered temporary folder and forget it."""
    remove_folder(path)
    unregister_folder(path)


@contextmanager
def critical() -> Iterator[None]:
    """A section the watchdog does not cut short (moving outputs into place)."""
    with _critical_lock:
        yield


def _remove_registered() -> None:
    with _state_lock:
        folders = list(_folders)
    for folder in folders:
        discard_folder(folder)


# ------------------------------------------------------------------------- the command line
def keep_on_interrupt(text: str | None) -> None:
    """Say, in the interrupt line, what an interrupted command keeps on purpose (``pairot
    atlas``: its finished pairs, which the next run loads) instead of "no output written";
    ``None`` forgets it (each command starts so)."""
    with _state_lock:
        _kept[:] = [] if text is None else [text]


def announce(signum: int | None = None) -> int:
    """Print the one line of an interrupted command (once) and return its exit code."""
    global _announced
    signum = signum or _requested or int(signal.SIGINT)
    with _state_lock:
        first = not _announced
        _announced = True
        committed = list(_committed)
        kept = list(_kept)
    if first:
        name = signal.Signals(signum).name
        reason = "interrupted" if signum == signal.SIGINT else f"stopped by {name}"
        if committed:
            line = (
                f"pairot: {reason} after the run had finished; the outputs in "
                f"{committed[-1]} are complete"
            )
        elif kept:
            line = f"pairot: {reason}; {kept[-1]}"
        else:
            line = f"pairot: {reason}; no output written"
        prefix = "\n" if _isatty(2) else ""
        try:
            os.write(2, f"{prefix}{line}\n".encode())
        except OSError:  # pragma: no cover - stderr closed
            pass
    return 128 + signum


def _isatty(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:  # pragma: no cover
        return False


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # pragma: no cover - closed or broken pipe
            pass


def terminate(signum: int) -> None:
    """Remove the registered folders, print the line and end the process (never returns)."""
    with _exit_lock:  # the first thread to get here ends the process
        _request(signum)
        with _critical_lock:
            _remove_registered()
            _flush()
            code = announce(signum)
            os._exit(code)


def _handled_signals() -> list[int]:
    names = ("SIGINT", "SIGTERM", "SIGHUP")
    return [getattr(signal, name) for name in names if hasattr(signal, name)]


def _watchdog(read_fd: int, handled: set[int], grace: float) -> None:
    while True:
        try:
            data = os.read(read_fd, 1)
        except InterruptedError:  # pragma: no cover
            continue
        except OSError:  # pragma: no cover - the pipe is gone
            return
        if not data:  # pragma: no cover
            return
        signum = data[0]
        if signum not in handled:  # pragma: no cover - a signal pairot does not handle
            continue
        _request(signum)
        time.sleep(grace)  # the main thread normally ends the process before this
        terminate(signum)


def _process_handler(signum, frame) -> None:
    _request(signum)


def install_process_handlers(grace: float = GRACE_SECONDS) -> Callable[[], None]:
    """Handle SIGINT, SIGTERM and SIGHUP for the rest of the process (the command line).

    Signals ignored when the process started (``nohup``, background jobs) stay ignored.
    Returns a function that undoes it (for tests). Call from the main thread.
    """
    global _process_handlers
    # a signal ignored at start stays ignored: SIGHUP under nohup, SIGINT in a shell's
    # background job
    handled = [s for s in _handled_signals() if signal.getsignal(s) is not signal.SIG_IGN]
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    previous_handlers = {s: signal.signal(s, _process_handler) for s in handled}
    previous_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    _process_handlers = True
    thread = threading.Thread(
        target=_watchdog,
        args=(read_fd, set(handled), grace),
        name="pairot-interrupt",
        daemon=True,
    )
    thread.start()

    def uninstall() -> None:
        global _process_handlers
        signal.set_wakeup_fd(previous_fd)
        for s, handler in previous_handlers.items():
            signal.signal(s, handler)
        _process_handlers = False

    return uninstall


def finish_process(code: int) -> None:
    """End the command-line process with ``code`` (or the pending interrupt's); never returns.

    ``os._exit`` after flushing: an interpreter shutdown with JAX's native threads still
    running is where interrupted runs used to crash.
    """
    with _exit_lock:
        _flush()  # a signal that arrives while output drains still counts
        signum = _requested
        if signum is None:
            os._exit(code)
    terminate(signum)  # a signal came before the exit: its code and line
