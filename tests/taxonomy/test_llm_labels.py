"""The optional LLM labeller (gem_app.taxonomy.llm_labels) against a local fake endpoint."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from gem_app.taxonomy.labels import ClusterLabel
from gem_app.taxonomy.llm_labels import llm_labels


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

    def __init__(self, mode):
        self.mode, self.requests, self.release = mode, [], threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append((self.path, dict(self.headers), body))
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


@pytest.fixture
def server(request, monkeypatch):
    for name in (
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ):
        monkeypatch.delenv(name, raising=False)
    srv = _Server(request.param)
    yield srv
    srv.close()


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
    from gem_app.taxonomy.llm_labels import MAX_NAME_CHARS, _parse_name

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
    from gem_app.taxonomy.llm_labels import _parse_name

    with pytest.raises(ValueError):
        _parse_name(body)
