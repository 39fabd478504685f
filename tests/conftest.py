"""Shared fixtures: real nats-server and SeaweedFS on loopback, and archive settings for both backends.

``tests/`` is not a package, so pytest puts this directory on ``sys.path``
and test modules import helpers as ``from servers import ...``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from servers import SeaweedFS

from archiver.config import ArchiveSettings
from archiver.demo.servers import NatsServer
from archiver.storage.interface import Storage
from archiver.storage.open import open_storage

# Tests may talk to loopback only: keep AWS SDKs (botocore, pyarrow's C++ SDK) off the EC2 metadata address.
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")

S3_TEST_PREFIX = "archive/v1"

# Property tests: a quick pass in the suite; `./dev fuzz` runs the same properties with many more examples.
settings.register_profile("ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "fuzz", max_examples=int(os.environ.get("FUZZ_EXAMPLES", "100000")), deadline=None,
    suppress_health_check=list(HealthCheck),
)  # fmt: skip
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True, scope="session")
def user_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """archiver's user cache (the readers' table snapshots) in the session's temporary directory, not ~/.cache."""
    previous = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))
    try:
        yield Path(os.environ["XDG_CACHE_HOME"])
    finally:
        if previous is None:
            os.environ.pop("XDG_CACHE_HOME", None)
        else:
            os.environ["XDG_CACHE_HOME"] = previous


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A JetStream-enabled nats-server on a free loopback port (.url, .port, .stop(), .start())."""
    server = NatsServer(tmp_path / "nats")
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """One ``weed mini`` for the session (.endpoint_url, .access_key, .secret_key, .data_dir, stop/start)."""
    server = SeaweedFS(tmp_path_factory.mktemp("seaweedfs"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_settings(seaweedfs: SeaweedFS) -> ArchiveSettings:
    """Settings for ``s3://<fresh bucket>/archive/v1`` on the session's SeaweedFS."""
    if not seaweedfs.running:  # an earlier outage test may have left it stopped
        seaweedfs.start()
    bucket = f"test-{uuid.uuid4().hex[:16]}"
    seaweedfs.create_bucket(bucket)
    return seaweedfs.archive_settings(bucket, S3_TEST_PREFIX)


@pytest.fixture
def local_settings(tmp_path: Path) -> ArchiveSettings:
    """Settings for a local archive directory ``<tmp_path>/archive`` (not created yet)."""
    return ArchiveSettings("file", "", str(tmp_path / "archive"))


@pytest.fixture(params=["local", "s3"])
async def empty_archive(request: pytest.FixtureRequest) -> AsyncIterator[tuple[ArchiveSettings, Storage]]:
    """(settings, storage) of an empty archive on each backend (local directory, SeaweedFS)."""
    settings = request.getfixturevalue(f"{request.param}_settings")
    storage = open_storage(settings)
    try:
        yield settings, storage
    finally:
        await storage.close()
