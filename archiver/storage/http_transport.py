"""Connections of the signed-HTTP S3 reader: TLS with the system's CAs or ``AWS_CA_BUNDLE``, directly or
through the proxy of ``HTTPS_PROXY``/``HTTP_PROXY`` (``NO_PROXY`` honoured), as botocore would.

An https endpoint is reached through a proxy by ``CONNECT`` (TLS end to end,
the proxy sees only the host name); a plain-http endpoint by sending the
request to the proxy with the absolute URL. A proxy's ``user:password@`` is
sent as ``Proxy-Authorization: Basic``. Only ``http://`` proxies are supported
(as by most clients); anything else is a ConfigError at start.
"""

from __future__ import annotations

import base64
import http.client
import ssl
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from archiver.config import S3Settings
from archiver.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Transport:
    """How to open connections to one endpoint."""

    host: str  # host[:port] of the endpoint
    https: bool
    context: ssl.SSLContext | None
    proxy: tuple[str, int] | None = None
    proxy_headers: dict[str, str] | None = None

    @property
    def absolute_urls(self) -> bool:
        """Whether requests carry the absolute URL (plain http through a proxy)."""
        return self.proxy is not None and not self.https

    def connect(self, timeout_s: float) -> http.client.HTTPConnection:
        """A new (not yet connected) connection."""
        if self.proxy is None:
            if self.https:
                return http.client.HTTPSConnection(self.host, timeout=timeout_s, context=self.context)
            return http.client.HTTPConnection(self.host, timeout=timeout_s)
        host, port = self.proxy
        if not self.https:
            return http.client.HTTPConnection(host, port, timeout=timeout_s)
        conn = http.client.HTTPSConnection(host, port, timeout=timeout_s, context=self.context)
        # TLS runs inside the tunnel, verified against the endpoint's name (http.client's tunnel).
        target = urlsplit(f"//{self.host}")
        conn.set_tunnel(target.hostname or self.host, target.port or 443, headers=self.proxy_headers)
        return conn


def proxy_for(s3: S3Settings, endpoint_url: str) -> str | None:
    """The proxy URL to reach ``endpoint_url`` through, or None (none set, or NO_PROXY names its host)."""
    from urllib.request import proxy_bypass_environment  # type: ignore[attr-defined]

    parts = urlsplit(endpoint_url)
    proxy = s3.https_proxy if parts.scheme == "https" else s3.http_proxy
    # A dict, not the environment: NO_PROXY was read in archiver.environment.
    if not proxy or (
        s3.no_proxy and proxy_bypass_environment(parts.netloc.rpartition("@")[2], {"no": s3.no_proxy})
    ):
        return None
    return proxy if "://" in proxy else f"http://{proxy}"


def transport(endpoint_url: str, s3: S3Settings) -> Transport:
    """The transport for ``endpoint_url`` with the settings' CA bundle and proxies; ConfigError when unusable."""
    parts = urlsplit(endpoint_url)
    host = parts.netloc.rpartition("@")[2]  # userinfo is never sent nor shown
    https = parts.scheme == "https"
    context = None
    if https:
        try:
            context = ssl.create_default_context(cafile=s3.ca_bundle)
        except (OSError, ssl.SSLError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise ConfigError(f"AWS_CA_BUNDLE: cannot use {s3.ca_bundle}: {reason}") from None
    proxy_url = proxy_for(s3, endpoint_url)
    if proxy_url is None:
        return Transport(host, https, context)
    proxy = urlsplit(proxy_url)
    variable = "HTTPS_PROXY" if https else "HTTP_PROXY"
    if proxy.scheme != "http" or not proxy.hostname:
        raise ConfigError(
            f"{variable}: expected http://[user:password@]host[:port], got a {proxy.scheme}:// URL"
        )
    headers = {}
    if proxy.username is not None:
        pair = f"{unquote(proxy.username)}:{unquote(proxy.password or '')}"
        headers["Proxy-Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
    return Transport(host, https, context, (proxy.hostname, proxy.port or 80), headers or None)
