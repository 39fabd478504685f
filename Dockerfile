# syntax=docker/dockerfile:1
# The log archiver: `archiver run` as a non-root user, spool on the /data volume.
# Build: docker build -t archiver .   (fly deploy builds it the same way)

# --- builder: install the package and its dependencies into a self-contained venv ---
FROM python:3.12-slim AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Every dependency ships manylinux wheels for 3.12, so no compiler is needed even here.
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
COPY pyproject.toml README.md ./
COPY archiver ./archiver
COPY query ./query
# A regular (non-editable) install: the final stage copies only /opt/venv, not /src.
# [fast] brings uvloop, measured faster on the NATS hot path.
RUN pip install ".[fast]" \
    && archiver --version

# --- final: the same Python base (the venv's interpreter links to it), the venv, nothing else ---
FROM python:3.12-slim

# A fixed uid: Fly mounts the volume owned by the image's USER, and a fixed number keeps an
# existing volume's files readable across rebuilds.
RUN groupadd --system --gid 10001 archiver \
    && useradd --system --uid 10001 --gid archiver --home-dir /home/archiver --create-home \
       --shell /usr/sbin/nologin archiver \
    && mkdir -p /data/spool \
    && chown -R archiver:archiver /data

COPY --from=builder /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SPOOL_DIR=/data/spool

# Port 8686 serves /health and /metrics on the private network only (fly.toml [checks] and
# [metrics]); nothing is exposed publicly, so there is deliberately no EXPOSE.
# Fly ignores HEALTHCHECK (it uses fly.toml [checks]); this one is for plain Docker/Compose.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('HTTP_PORT', '8686'), timeout=4)"

# Mount a volume at /data (fly.toml [mounts]; docker run -v archiver_spool:/data) so the spool
# survives restarts; no VOLUME line, which would leave an anonymous volume behind every run.
USER archiver
WORKDIR /home/archiver

CMD ["archiver", "run"]
