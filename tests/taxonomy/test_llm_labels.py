"""The optional LLM labeller (gem_app.taxonomy.llm_labels) against a local fake endpoint."""

from __future__ import annotations

import base64
import json
import logging
import socket
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from gem_app.taxonomy.labels import ClusterLabel
from gem_app.taxonomy.llm_labels import MAX_NAME_CHARS, _parse_name, _redact, llm_labels


def _labels():
    return [
        ClusterLabel(
            k,
            f"gis {k}",
            [f"term{k}a", f"term{k}b"],
            [1.0, 0.5],
            [{"row": k, "score": 1.0, "text": f"document {k}"}],
            0.5,
            f"gis {k}",
        )
        for k in range(3)
    ]


class _Server:
    """A local OpenAI-compatible endpoint whose behaviour the test chooses."""

    def __init__(self, mode, location=None):
        self.mode, self.requests, self.release = mode, [], threading.Event()
        self.location = location
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # where a followed 301/302/303 would land
                outer.requests.append((self.path, dict(self.headers), None))
                self.send_error(404)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append((self.path, dict(self.headers), body))
                if outer.mode == "redirect":
                    self.send_response(int(outer.location[0]))
                    self.send_header("Location", outer.location[1])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if outer.mode == "hang":
                    outer.release.wait(10)
                    return
                if outer.mode == "500":
                    self.send_error(500, "boom")
                    return
                if outer.mode == "garbage":
                    reply = b"<html>not json"
                else:
                    top = body["messages"][1]["content"].split("Top terms: ")[1].split(",")[0]
                    content = f'Name: "{top.upper()} topic".\nextra line'
                    reply = json.dumps({"choices": [{"message": {"content": content}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.handle_error = lambda *args: None
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


PROXY_VARIABLES = (
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
)


@pytest.fixture
def server(request, monkeypatch):
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    srv = _Server(request.param)
    yield srv
    srv.close()


@pytest.fixture
def no_network(monkeypatch):
    """Any connection attempt fails at once (nothing leaves the machine)."""

    def refuse(*args, **kwargs):
        raise ConnectionRefusedError("no network in tests")

    monkeypatch.setattr(socket, "create_connection", refuse)


def test_not_configured_never_opens_a_socket(monkeypatch):
    for name in ("GEM_LLM_BASE_URL", "GEM_LLM_MODEL", "GEM_LLM_API_KEY"):
        monkeypatch.delenv(name, raising=False)

    def no_socket(*args, **kwargs):
        raise AssertionError("a socket was opened")

    monkeypatch.setattr(socket, "socket", no_socket)
    monkeypatch.setattr(socket, "create_connection", no_socket)
    labels = _labels()
    result = llm_labels(labels)
    assert not result.configured and "not configured" in result.message
    assert result.clusters == labels
    result = llm_labels(labels, base_url="http://127.0.0.1:9")  # model missing
    assert not result.configured and "GEM_LLM_MODEL" in result.message


@pytest.mark.parametrize("server", ["good"], indirect=True)
def test_good_endpoint_renames_from_environment(server, monkeypatch):
    monkeypatch.setenv("GEM_LLM_BASE_URL", server.url + "/")
    monkeypatch.setenv("GEM_LLM_MODEL", "tiny-model")
    monkeypatch.setenv("GEM_LLM_API_KEY", "secret-key")
    result = llm_labels(_labels(), timeout=5)
    assert result.configured and result.failures == {}
    assert [c.label for c in result.clusters] == [f"TERM{k}A topic" for k in range(3)]
    assert all(c.source == "llm" and c.gis_label == f"gis {c.cluster}" for c in result.clusters)
    assert "3 of 3" in result.message and "secret-key" not in result.message
    path, headers, body = server.requests[0]
    assert path == "/v1/chat/completions"
    assert headers["Authorization"] == "Bearer secret-key"
    assert body["model"] == "tiny-model" and "document 0" in body["messages"][1]["content"]


@pytest.mark.parametrize(
    "server, reason", [("500", "HTTP 500"), ("garbage", "unexpected response")], indirect=["server"]
)
def test_failing_endpoint_falls_back_per_cluster(server, reason):
    labels = _labels()
    result = llm_labels(labels, base_url=server.url, model="m", timeout=5)
    assert result.configured
    assert [c.label for c in result.clusters] == [c.label for c in labels]
    assert all(c.source == "gis" for c in result.clusters)
    assert set(result.failures) == {0, 1, 2} and all(reason in r for r in result.failures.values())
    assert len(server.requests) == 3  # an HTTP error does not stop the other clusters
    assert "GIS labels kept for 3" in result.message and reason in result.message


@pytest.mark.parametrize("server", ["hang"], indirect=True)
def test_hanging_endpoint_times_out_and_stops(server):
    result = llm_labels(_labels(), base_url=server.url, model="m", timeout=0.3)
    assert [c.label for c in result.clusters] == ["gis 0", "gis 1", "gis 2"]
    assert "no answer within 0.3 s" in result.failures[0]
    assert result.failures[1].startswith("not attempted")
    assert len(server.requests) == 1
    assert "GIS labels kept for 3" in result.message


def test_refused_connection_and_bad_url():
    with socket.socket() as sock:  # a port with nobody listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = llm_labels(_labels(), base_url=f"http://127.0.0.1:{port}", model="m", timeout=2)
    assert "connection failed" in result.failures[0] and len(result.failures) == 3
    with pytest.raises(ValueError, match="http"):
        llm_labels(_labels(), base_url="file:///etc/passwd", model="m")


@pytest.mark.parametrize(
    "content, expected",
    [
        ("Classical Music", "Classical Music"),
        ("  **Cluster name: Arctic Geography.**\n\nBecause...", "Arctic Geography"),
        ("word " * 30, None),  # cut to MAX_NAME_CHARS at a word boundary
    ],
)
def test_parse_name(content, expected):
    name = _parse_name(json.dumps({"choices": [{"message": {"content": content}}]}).encode())
    if expected is None:
        assert len(name) <= MAX_NAME_CHARS + 1 and name.endswith("word…")
    else:
        assert name == expected


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"[]",
        b'{"choices": []}',
        b'{"choices": [{"message": {"content": 3}}]}',
        b'{"choices": [{"message": {"content": "  \\n "}}]}',
    ],
)
def test_parse_name_rejects_unusable_answers(body):
    with pytest.raises(ValueError):
        _parse_name(body)


# ----------------------------------------------------------------------------- security
SECRET = "sk-very-secret-42"


def _texts(result) -> str:
    return result.message + " ".join(result.failures.values())


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("target_host", ["127.0.0.1", "localhost"])
def test_a_redirect_to_another_origin_never_receives_the_key(monkeypatch, code, target_host):
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    elsewhere = _Server("good")
    port = elsewhere.httpd.server_address[1]
    target = f"http://{target_host}:{port}/v1/chat/completions"
    endpoint = _Server("redirect", location=(code, target))
    try:
        result = llm_labels(_labels(), base_url=endpoint.url, model="m", api_key=SECRET, timeout=5)
    finally:
        endpoint.close()
        elsewhere.close()
    assert elsewhere.requests == []  # not followed at all: no request, no header
    assert endpoint.requests[0][1]["Authorization"] == f"Bearer {SECRET}"
    assert [c.source for c in result.clusters] == ["gis"] * 3
    assert (
        f"redirect (HTTP {code})" in result.failures[0]
        and f"{target_host}:{port}" in result.failures[0]
    )
    assert result.failures[1].startswith("not attempted")  # a redirect is a configuration error
    assert SECRET not in _texts(result)


@pytest.mark.parametrize("server", ["good"], indirect=True)
def test_a_same_origin_redirect_is_not_followed_either(server):
    server.mode, server.location = "redirect", (302, server.url + "/elsewhere")
    result = llm_labels(_labels(), base_url=server.url, model="m", api_key=SECRET, timeout=5)
    assert len(server.requests) == 1 and server.requests[0][2] is not None  # the POST only
    assert "redirect (HTTP 302)" in result.failures[0]


@pytest.mark.parametrize(
    "base_url", ["http://example.com/v1", "http://10.0.0.7:8000/v1", "http://[2001:db8::1]/v1"]
)
def test_a_key_over_plain_http_is_refused_except_to_localhost(base_url, no_network):
    with pytest.raises(ValueError, match="plain http") as info:
        llm_labels(_labels(), base_url=base_url, model="m", api_key=SECRET)
    assert SECRET not in str(info.value)
    # without a key, plain http is allowed (here the connection simply fails)
    result = llm_labels(_labels(), base_url=base_url, model="m", timeout=1)
    assert "connection failed" in result.failures[0]
    for loopback in ("http://localhost:9/v1", "http://127.0.0.1:9/v1", "http://[::1]:9/v1"):
        result = llm_labels(_labels(), base_url=loopback, model="m", api_key=SECRET, timeout=1)
        assert "connection failed" in result.failures[0]
    result = llm_labels(_labels(), base_url="https://example.com/v1", model="m", api_key=SECRET)
    assert "connection failed" in result.failures[0]


@pytest.mark.parametrize("server", ["good"], indirect=True)
def test_credentials_in_the_base_url_are_sent_as_basic_auth_and_never_echoed(server, caplog):
    caplog.set_level(logging.DEBUG)
    port = server.httpd.server_address[1]
    base = f"http://alice:{SECRET}@127.0.0.1:{port}/v1"
    result = llm_labels(_labels(), base_url=base, model="m", timeout=5)
    assert result.failures == {}
    path, headers, _ = server.requests[0]
    assert path == "/v1/chat/completions"
    assert (
        headers["Authorization"] == "Basic " + base64.b64encode(f"alice:{SECRET}".encode()).decode()
    )
    assert SECRET not in _texts(result)
    server.mode = "500"
    result = llm_labels(_labels(), base_url=base, model="m", timeout=5)
    assert "HTTP 500" in result.failures[0] and SECRET not in _texts(result)
    assert SECRET not in caplog.text


@pytest.mark.parametrize(
    "base_url, api_key, match",
    [
        (f"ftp://bob:{SECRET}@host/v1", None, "http"),
        (f"http://bob:{SECRET}@example.com/v1", None, "plain http"),
        (f"https://bob:{SECRET}@example.com:99999/v1", None, "port"),
        (f"https://bob:{SECRET}@example.com/v1", "another-key", "not both"),
        (f"https://bob:{SECRET}@/v1", None, "host"),
        (f"ftp://host/v1?api-key={SECRET}", None, "http"),
        (f"http://example.com/v1?api-version=1&key={SECRET}", "k", "plain http"),
    ],
)
def test_errors_never_echo_credentials_from_the_base_url(base_url, api_key, match, no_network):
    with pytest.raises(ValueError, match=match) as info:
        llm_labels(_labels(), base_url=base_url, model="m", api_key=api_key)
    assert SECRET not in str(info.value) and "***" in str(info.value)


@pytest.mark.parametrize("key", ["abc\r\nX-Injected: 1", "two words", "tab\there", "caf\u00e9"])
def test_an_api_key_that_cannot_be_a_header_is_refused_without_echo(key, no_network):
    with pytest.raises(ValueError, match="API key") as info:
        llm_labels(_labels(), base_url="https://example.com/v1", model="m", api_key=key)
    assert key.strip() not in str(info.value)


def test_loopback_endpoints_bypass_proxies(monkeypatch):
    """A key for a local endpoint must not travel in clear text through an HTTP proxy."""
    proxy = _Server("good")
    endpoint = _Server("good")
    monkeypatch.setenv("http_proxy", proxy.url.removesuffix("/v1"))
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.setattr(
        urllib.request, "_opener", None
    )  # urlopen's cached opener reads proxies once
    try:
        result = llm_labels(_labels(), base_url=endpoint.url, model="m", api_key=SECRET, timeout=5)
    finally:
        proxy.close()
        endpoint.close()
    assert proxy.requests == [] and len(endpoint.requests) == 3 and result.failures == {}


@pytest.mark.parametrize(
    "url, shown",
    [
        ("https://api.example.com/v1", "https://api.example.com/v1"),
        ("https://u:p@h:8443/v1", "https://***@h:8443/v1"),
        ("https://u:p/w@rd@h/v1", "https://***@h/v1"),  # an unescaped '/' or '@' in the password
        ("https://h/v1?api-key=abc", "https://h/v1?***"),
        ("https:/user:pw@host/v1", "https:/***@host/v1"),  # malformed: masked all the same
        ("user:pw@host:8000", "***@host:8000"),
        ("https://h/v1?email=a@b", "https://h/v1?***"),
    ],
)
def test_redact(url, shown):
    assert _redact(url) == shown
