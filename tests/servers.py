"""Real servers for tests: nats-server and SeaweedFS (``weed mini``) on free loopback ports.

Each server runs in its own process group, logs to a file (a pipe could fill
up and stall it), and can be stopped and started again on the same ports and
data directory, so tests can simulate outages.
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
import uuid
from pathlib import Path
from typing import Any

from archiver.config import ArchiveSettings, S3Settings

HOST = "127.0.0.1"
SEAWEED_ACCESS_KEY = "archiver-test"
SEAWEED_SECRET_KEY = "archiver-test-secret"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def free_port_pair(offset: int) -> tuple[int, int]:
    """Two free loopback ports ``p`` and ``p + offset`` (for servers that derive one from the other)."""
    for _ in range(100):
        port = free_port()
        if port + offset > 65535:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((HOST, port + offset))
            except OSError:
                continue
        return port, port + offset
    raise RuntimeError(f"no free pair of loopback ports {offset} apart")


def find_binary(name: str) -> str:
    """The executable from the venv's bin directory (next to sys.executable), else from PATH."""
    venv_bin = Path(sys.executable).parent
    found = shutil.which(name, path=str(venv_bin)) or shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} not found in {venv_bin} or PATH; install the test extras")
    return found


def port_open(port: int, host: str = HOST) -> bool:
    """Whether something accepts TCP connections on host:port."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


class ManagedProcess:
    """A server process in its own process group with output appended to a log file."""

    def __init__(self, name: str, log_path: Path, env: dict[str, str] | None = None) -> None:
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

    def start(self, timeout: float = 30.0) -> None:
        """Start the server and wait until it serves; raise with the log tail if it does not."""
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
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                break
            if self.wait_ready(deadline):
                return
            time.sleep(0.05)
        self.stop()
        tail = self.log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{self.name} did not become ready; log {self.log_path}:\n{tail}")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the whole process group: SIGTERM, then SIGKILL after ``timeout`` seconds."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        self._signal(proc, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
        # Children (if any) die with the group even when the leader already exited.
        self._signal(proc, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)

    def kill(self) -> None:
        """Stop at once with SIGKILL, like a crash."""
        self.stop(timeout=0)

    @staticmethod
    def _signal(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)


class NatsServer(ManagedProcess):
    """nats-server with JetStream on a fixed loopback port; restarts keep port and store dir."""

    def __init__(self, work_dir: Path, max_payload_bytes: int | None = None) -> None:
        work_dir.mkdir(parents=True, exist_ok=True)
        super().__init__("nats-server", work_dir / "nats-server.log")
        self.binary = find_binary("nats-server")
        self.port = free_port()
        self.store_dir = work_dir / "jetstream"
        self.url = f"nats://{HOST}:{self.port}"
        #: Largest message the server accepts; None keeps nats-server's default (1 MiB).
        self.max_payload_bytes = max_payload_bytes
        self.config_path = work_dir / "nats-server.conf"

    def argv(self) -> list[str]:
        """nats-server bound to loopback, JetStream stored under store_dir."""
        argv = [self.binary, "-a", HOST, "-p", str(self.port), "-js", "-sd", str(self.store_dir)]
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


class SeaweedFS(ManagedProcess):
    """``weed mini`` (master, volume, filer, S3, WebDAV, admin) with every listener on a free loopback port."""

    def __init__(self, work_dir: Path) -> None:
        work_dir.mkdir(parents=True, exist_ok=True)
        self.access_key = SEAWEED_ACCESS_KEY
        self.secret_key = SEAWEED_SECRET_KEY
        env = dict(os.environ, AWS_ACCESS_KEY_ID=self.access_key, AWS_SECRET_ACCESS_KEY=self.secret_key)
        # weed puts its gRPC unix sockets and glog files in TMPDIR; keep them in the work dir.
        env["TMPDIR"] = str(work_dir)
        super().__init__("weed mini", work_dir / "weed.log", env)
        self.binary = find_binary("weed")
        self.work_dir = work_dir
        self.data_dir = work_dir / "data"
        self.data_dir.mkdir(exist_ok=True)
        names = ("s3", "s3_grpc", "master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc")
        while True:  # ports probed one at a time can repeat; draw again until all differ
            self.ports = {name: free_port() for name in (*names, "webdav")}
            # weed mini's built-in maintenance worker dials the admin server at its HTTP port + 10000,
            # whatever -admin.port.grpc says, so the gRPC port must sit exactly there.
            self.ports["admin"], self.ports["admin_grpc"] = free_port_pair(10000)
            if len(set(self.ports.values())) == len(self.ports):
                break
        self.s3_port = self.ports["s3"]
        self.endpoint_url = f"http://{HOST}:{self.s3_port}"
        self._botocore_session: Any = None

    def argv(self) -> list[str]:
        """weed mini with telemetry, Iceberg and Lance off and every port chosen here."""
        p = self.ports
        return [
            self.binary,
            "mini",
            f"-dir={self.data_dir}",
            f"-ip={HOST}",
            f"-ip.bind={HOST}",
            "-master.telemetry=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            # Real S3 refuses writes to a missing bucket; the default would create it silently.
            "-s3.autoCreateBucket=false",
            f"-s3.port={p['s3']}",
            f"-s3.port.grpc={p['s3_grpc']}",
            f"-master.port={p['master']}",
            f"-master.port.grpc={p['master_grpc']}",
            f"-volume.port={p['volume']}",
            f"-volume.port.grpc={p['volume_grpc']}",
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={p['filer_grpc']}",
            f"-webdav.port={p['webdav']}",
            f"-webdav.cacheDir={self.work_dir / 'webdav-cache'}",
            f"-admin.port={p['admin']}",
            f"-admin.port.grpc={p['admin_grpc']}",
            f"-admin.dataDir={self.work_dir / 'admin'}",
            f"-filer.localSocket={self.work_dir / 'filer.sock'}",
            f"-s3.localSocket={self.work_dir / 's3.sock'}",
        ]

    def client(self) -> Any:
        """A synchronous botocore S3 client with the server's credentials (for setup and inspection)."""
        import botocore.session
        from botocore.config import Config

        # One session for all clients: a new session re-reads the service models (~0.1 s).
        if self._botocore_session is None:
            self._botocore_session = botocore.session.get_session()
        return self._botocore_session.create_client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=Config(
                s3={"addressing_style": "path"},
                retries={"mode": "standard", "total_max_attempts": 1},
                connect_timeout=2,
                read_timeout=10,
            ),
        )

    def wait_ready(self, deadline: float) -> bool:
        """Ready once a bucket can be created (the filer behind S3 is up, not just the port)."""
        if not port_open(self.s3_port):
            return False
        try:
            self.create_bucket(f"ready-{uuid.uuid4().hex[:12]}")
        except Exception:
            return False
        return True

    def create_bucket(self, name: str) -> None:
        """Create a bucket (raise on failure)."""
        client = self.client()
        try:
            client.create_bucket(Bucket=name)
        finally:
            client.close()

    def archive_settings(self, bucket: str, prefix: str = "") -> ArchiveSettings:
        """ArchiveSettings for ``s3://bucket/prefix`` with this server's endpoint and credentials."""
        s3 = S3Settings(
            endpoint_url=self.endpoint_url,
            region="us-east-1",
            access_key_id=self.access_key,
            secret_access_key=self.secret_key,
        )
        return ArchiveSettings("s3", bucket, prefix, s3)
