"""SeaweedFS (``weed mini``) on free loopback ports, for the tests.

It runs under the launcher that nats-server uses too,
:class:`archiver.demo.servers.ManagedProcess`: its own process group, output to
a log file, stopped and started again on the same ports and data directory so
that tests can simulate outages.
"""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path
from typing import Any

from archiver.config import ArchiveSettings, S3Settings
from archiver.demo.servers import HOST, ManagedProcess, find_binary, free_port, port_open

SEAWEED_ACCESS_KEY = "archiver-test"
SEAWEED_SECRET_KEY = "archiver-test-secret"


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
        self.binary = find_binary("weed", "install the test extras: ./dev test")
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
            # Every bucket (one per test) takes volumes of its own, and weed sizes its volume count from
            # the free disk: ~65 on a 67 GB disk, after which every write fails with InternalError (500).
            # Small volumes and an explicit count keep hundreds of test buckets writable on any disk.
            "-master.volumeSizeLimitMB=32",
            "-volume.max=3000",
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
