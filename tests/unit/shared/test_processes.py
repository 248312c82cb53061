"""shared.processes.stop: SIGTERM, a shared grace period, then SIGKILL for who is left."""

from __future__ import annotations

import signal
import subprocess
import sys

from shared.processes import stop

IGNORES_SIGTERM = (
    "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ready', flush=True); time.sleep(60)"
)
OBEYS = "import sys, time; print('ready', flush=True); time.sleep(60)"


def started(code: str) -> subprocess.Popen[bytes]:
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert process.stdout is not None and process.stdout.readline() == b"ready\n"
    return process


def test_each_gets_sigterm_the_stubborn_one_is_killed_and_reported() -> None:
    done = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    done.wait()
    obeys, stubborn = started(OBEYS), started(IGNORES_SIGTERM)
    killed: list[int] = []
    codes = stop([done, obeys, stubborn], 1.0, on_kill=lambda p: killed.append(p.pid))
    assert codes == [3, -signal.SIGTERM, -signal.SIGKILL]
    assert killed == [stubborn.pid]
