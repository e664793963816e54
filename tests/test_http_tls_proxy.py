"""The openai backend's default HTTP client (aiohttp) over TLS and through proxies, against
servers on 127.0.0.1: a certificate made here with openssl, and a forward proxy (rawhttp.RawProxy)
named by HTTP_PROXY / HTTPS_PROXY."""

from __future__ import annotations

import ssl
import subprocess

import pytest
from rawhttp import (
    OK_BODY,
    SSE_HEAD,
    RawProxy,
    RawServer,
    answer_each,
    chunk,
    response,
    run,
    sse,
    stream_handler,
)

from smoa import BackendError, ConfigError
from smoa.backends.openai_backend import OpenAIBackend
from smoa.testing import free_port
from smoa.types import Request, Settings

pytestmark = pytest.mark.server

OK = response(body=OK_BODY)
PROXY_VARS = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY",
              "no_proxy", "NO_PROXY")


def req() -> Request:
    return Request(messages=({"role": "user", "content": "What is 2+2?"},), model="m1", settings=Settings())


async def collect(be: OpenAIBackend) -> list[str]:
    return [ev.delta async for ev in be.stream(req()) if ev.delta]


@pytest.fixture(autouse=True)
def _no_proxy_from_outside(monkeypatch):
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)


# -- TLS ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(d / "k.pem"),
         "-out", str(d / "c.pem"), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )
    return d / "c.pem", d / "k.pem"


def _server_ssl(cert) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    return ctx


@pytest.fixture
def trusted(cert, monkeypatch):
    """The test certificate is the only one trusted (SSL_CERT_FILE)."""
    monkeypatch.setenv("SSL_CERT_FILE", str(cert[0]))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    return cert


def test_https_with_a_trusted_self_signed_certificate(trusted):
    async def main():
        async with RawServer(answer_each(OK), ssl_ctx=_server_ssl(trusted)) as srv:
            be = OpenAIBackend(base_url=srv.url(scheme="https"), max_retries=0)
            for _ in range(3):
                assert (await be.complete(req())).text == "4"
            assert srv.accepted == 1 and srv.requests[0].headers["host"] == f"127.0.0.1:{srv.port}"
            await be.aclose()
        async with RawServer(stream_handler(SSE_HEAD + chunk(sse("A", "B")) + b"0\r\n\r\n"),
                             ssl_ctx=_server_ssl(trusted)) as srv:
            assert await collect(OpenAIBackend(base_url=srv.url(scheme="https"))) == ["A", "B"]

    run(main)


def test_https_with_an_untrusted_certificate_is_a_connect_error(cert, monkeypatch, tmp_path):
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path))  # no system CA could vouch for it anyway

    async def main():
        async with RawServer(answer_each(OK), ssl_ctx=_server_ssl(cert)) as srv:
            with pytest.raises(BackendError, match="cannot reach the endpoint.*(?i:certificate)") as ei:
                await OpenAIBackend(base_url=srv.url(scheme="https"), max_retries=0, timeout_s=5).complete(req())
            assert ei.value.retryable and srv.requests == []

    run(main)


def test_plain_http_to_a_tls_server_fails_cleanly(cert):
    async def main():
        async with RawServer(answer_each(OK), ssl_ctx=_server_ssl(cert)) as srv:
            with pytest.raises(BackendError) as ei:
                await OpenAIBackend(base_url=srv.url(), max_retries=0, timeout_s=2).complete(req())
            assert ei.value.retryable and "\n" not in str(ei.value)

    run(main)


# -- proxies --------------------------------------------------------------------------


def test_http_request_and_stream_go_through_http_proxy(monkeypatch):
    """The endpoint's host does not resolve: only the proxy (which maps it) can reach it."""

    async def handler(conn):
        while (r := await conn.read_request()) is not None:
            if r.headers.get("accept") == "text/event-stream":
                await conn.send(SSE_HEAD + chunk(sse("A")) + b"0\r\n\r\n")
            else:
                await conn.send(OK)

    async def main():
        async with RawServer(handler) as srv, RawProxy(routes={"llm.invalid:80": ("127.0.0.1", srv.port)}) as proxy:
            monkeypatch.setenv("HTTP_PROXY", proxy.url)
            be = OpenAIBackend(base_url="http://llm.invalid/v1", api_key="sk-proxied", max_retries=0, timeout_s=5)
            assert (await be.complete(req())).text == "4"
            assert await collect(be) == ["A"]
            assert proxy.seen[0] == "POST http://llm.invalid/v1/chat/completions"
            assert srv.requests[0].headers["host"] == "llm.invalid"
            assert srv.requests[0].headers["authorization"] == "Bearer sk-proxied"
            assert len(srv.requests) == 2
            await be.aclose()

    run(main)


def test_https_goes_through_the_proxy_as_a_connect_tunnel(trusted, monkeypatch):
    async def main():
        async with RawServer(answer_each(OK), ssl_ctx=_server_ssl(trusted)) as srv, RawProxy() as proxy:
            monkeypatch.setenv("HTTPS_PROXY", proxy.url)
            monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # for http only: must not be used
            be = OpenAIBackend(base_url=srv.url(scheme="https"), max_retries=0, timeout_s=5)
            assert (await be.complete(req())).text == "4"
            assert proxy.seen == [f"CONNECT 127.0.0.1:{srv.port}"]  # the proxy saw no plaintext
            await be.aclose()

    run(main)


def test_no_proxy_and_a_proxy_for_another_scheme_go_direct(monkeypatch):
    async def main():
        async with RawServer(answer_each(OK)) as srv, RawProxy() as proxy:
            monkeypatch.setenv("HTTPS_PROXY", proxy.url)  # https only: an http endpoint goes direct
            assert (await OpenAIBackend(base_url=srv.url(), max_retries=0).complete(req())).text == "4"
            monkeypatch.setenv("HTTP_PROXY", proxy.url)
            monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
            assert (await OpenAIBackend(base_url=srv.url(), max_retries=0).complete(req())).text == "4"
            assert proxy.seen == [] and len(srv.requests) == 2

    run(main)


def test_unreachable_proxy_is_a_connect_error(monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port()}")

    async def main():
        be = OpenAIBackend(base_url="http://llm.invalid/v1", max_retries=0, timeout_s=5)
        with pytest.raises(BackendError, match="cannot reach the endpoint.*proxy") as ei:
            await be.complete(req())
        assert ei.value.retryable
        await be.aclose()

    run(main)


def test_proxy_refusing_the_tunnel_is_a_connect_error(trusted, monkeypatch):
    async def main():
        async with RawServer(answer_each(OK), ssl_ctx=_server_ssl(trusted)) as srv, RawProxy(status=407) as proxy:
            monkeypatch.setenv("HTTPS_PROXY", proxy.url)
            be = OpenAIBackend(base_url=srv.url(scheme="https"), max_retries=0, timeout_s=5)
            with pytest.raises(BackendError, match="cannot reach the endpoint.*proxy refused.*407"):
                await be.complete(req())
            assert srv.requests == []
            await be.aclose()

    run(main)


def test_proxy_credentials_go_to_the_proxy_only(trusted, monkeypatch):
    async def main():
        async with RawServer(answer_each(OK), ssl_ctx=_server_ssl(trusted)) as srv, RawProxy() as proxy:
            monkeypatch.setenv("HTTPS_PROXY", f"http://user:pr0xy-pass@127.0.0.1:{proxy.port}")
            be = OpenAIBackend(base_url=srv.url(scheme="https"), max_retries=0, timeout_s=5)
            assert (await be.complete(req())).text == "4"
            assert proxy.headers[0]["proxy-authorization"] == "Basic dXNlcjpwcjB4eS1wYXNz"  # user:pr0xy-pass
            assert "proxy-authorization" not in srv.requests[0].headers
            await be.aclose()

    run(main)


def test_a_socks_proxy_is_a_config_error(monkeypatch):
    monkeypatch.setenv("ALL_PROXY", "socks5://127.0.0.1:1080")
    with pytest.raises(ConfigError, match=r"backend 'b': .* socks5:// proxy.*NO_PROXY.*openai-sdk"):
        OpenAIBackend(base_url="http://llm.invalid/v1", name="b")
    monkeypatch.setenv("NO_PROXY", "llm.invalid")
    assert OpenAIBackend(base_url="http://llm.invalid/v1").http_client == "aiohttp"
