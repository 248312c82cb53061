"""Stopping child processes: what ``make run``'s supervisor, the embedded broker and the
benchmarks all do when they are done with the processes they started."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from typing import Any


def stop(
    processes: Sequence[subprocess.Popen[Any]],
    grace_s: float,
    *,
    on_kill: Callable[[subprocess.Popen[Any]], object] = lambda process: None,
) -> list[int]:
    """SIGTERM every process still running, give them all ``grace_s`` seconds between
    them to exit, then SIGKILL (``on_kill`` is told first) and reap whoever is left.
    Returns each process's exit code, in order (``-9`` for a killed one). Never raises
    for a process that is gone already."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    codes = []
    for process in processes:
        try:
            code = process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            on_kill(process)
            process.kill()
            code = process.wait()
        codes.append(code)
    return codes
