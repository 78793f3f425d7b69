"""Optional LLM names for clusters through an OpenAI-compatible chat endpoint.

``llm_labels`` renames clusters (:class:`gem_app.taxonomy.labels.ClusterLabel`, or anything with
the same fields: ``cluster``, ``label``, ``terms``, ``documents``, ``gis_label``,
``source``) through an endpoint the user configures (``GEM_LLM_BASE_URL``,
``GEM_LLM_MODEL``, ``GEM_LLM_API_KEY``). It never opens a connection unless configured,
and every failure falls back to the GIS label and says so. The GIS labels stay the
default everywhere.

Credentials (the API key, or ``user:password@`` in the base URL, sent as HTTP Basic) are
guarded: they never go over plain http except to a loopback host (``localhost``,
``127.0.0.1``, ``::1``), redirects are never followed (urllib would forward the
Authorization header to whatever host the endpoint names), loopback requests bypass proxies,
and no message or error ever shows them (URLs are shown as ``scheme://***@host/path``).
"""

from __future__ import annotations

import base64
import dataclasses
import http.client
import ipaddress
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from gem_app.taxonomy.labels import ClusterLabel

__all__ = ["ENV_API_KEY", "ENV_BASE_URL", "ENV_MODEL", "LLMLabelResult", "llm_labels"]


ENV_BASE_URL, ENV_MODEL, ENV_API_KEY = "GEM_LLM_BASE_URL", "GEM_LLM_MODEL", "GEM_LLM_API_KEY"
MAX_NAME_CHARS = 60
_SYSTEM_PROMPT = (
    "You name clusters of documents for a pre-training data curation tool. "
    "Reply with a short, specific name of 2 to 5 words and nothing else."
)


@dataclass
class LLMLabelResult:
    """Outcome of :func:`llm_labels`.

    Attributes
    ----------
    clusters : list of ClusterLabel
        Renamed (``source == "llm"``) or unchanged GIS labels.
    message : str
        What happened, including every fallback and its reason.
    configured : bool
        False when no endpoint was configured (nothing was called).
    failures : dict of int to str
        Cluster -> reason its GIS label was kept.
    """

    clusters: list[ClusterLabel]
    message: str
    configured: bool
    failures: dict[int, str] = field(default_factory=dict)


class _EndpointDown(Exception):
    """Timeout, connection failure or redirect: the remaining clusters are not attempted."""


@dataclass(frozen=True)
class _Endpoint:
    """Where and how to post: ``url`` holds no credentials, ``authorization`` the header."""

    url: str
    authorization: str | None
    loopback: bool


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Follow no redirect: urlopen then raises the 3xx as an HTTPError."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


_SCHEME = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*:/{1,2}")
_USERINFO = re.compile(r"\S*@")
_QUERY = re.compile(r"\?.*\Z", re.DOTALL)
_HEADER_SAFE = re.compile(r"[\x21-\x7e]+")


def _redact(url: str) -> str:
    """``url`` with any query (``?api-key=...``) and everything up to an ``@`` masked.

    Deliberately coarse, so that malformed URLs (``https:/user:pw@host``, an unescaped ``/``
    or ``@`` in a password) are masked too; safe to show in messages.
    """
    scheme = _SCHEME.match(url)
    head = scheme.group() if scheme else ""
    return head + _USERINFO.sub("***@", _QUERY.sub("?***", url[len(head) :]))


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _endpoint(base_url: str, api_key: str | None) -> _Endpoint:
    """Validate the base URL and the credentials; ValueError (with no secret in it) if unsafe."""
    shown = _redact(base_url)
    parts = urllib.parse.urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"LLM base URL must be http(s)://host[:port][/path], got {shown!r}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"LLM base URL {shown!r} has an invalid port") from None
    loopback = _is_loopback(parts.hostname)
    has_userinfo = parts.username is not None or parts.password is not None
    if api_key is not None and has_userinfo:
        raise ValueError(
            f"LLM base URL {shown!r} holds credentials and an API key is set: give one, not both"
        )
    if api_key is not None and not _HEADER_SAFE.fullmatch(api_key):
        raise ValueError(
            f"the LLM API key ({ENV_API_KEY}) holds whitespace, control or non-ASCII characters"
        )
    if (api_key is not None or has_userinfo) and parts.scheme == "http" and not loopback:
        raise ValueError(
            f"refusing to send the LLM API key or credentials over plain http to {shown!r}: "
            "use https (plain http is allowed only to localhost, 127.0.0.1 or ::1)"
        )
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    netloc = host if port is None else f"{host}:{port}"
    path = parts.path.rstrip("/") + "/chat/completions"
    url = urllib.parse.urlunsplit((parts.scheme, netloc, path, parts.query, ""))
    authorization = None
    if api_key is not None:
        authorization = f"Bearer {api_key}"
    elif has_userinfo:
        pair = f"{urllib.parse.unquote(parts.username or '')}:{urllib.parse.unquote(parts.password or '')}"
        authorization = "Basic " + base64.b64encode(pair.encode("utf-8")).decode("ascii")
    return _Endpoint(url=url, authorization=authorization, loopback=loopback)


def _origin(url: str) -> str:
    """``scheme://host[:port]`` of a URL, without credentials (for messages)."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{netloc}" if parts.scheme else _redact(url)


def _opener(endpoint: _Endpoint) -> urllib.request.OpenerDirector:
    handlers: list = [_NoRedirect()]
    if endpoint.loopback:  # a proxy cannot reach our loopback and would see the key
        handlers.append(urllib.request.ProxyHandler({}))
    return urllib.request.build_opener(*handlers)


def _user_prompt(cluster: ClusterLabel, max_documents: int) -> str:
    lines = [f"Top terms: {', '.join(cluster.terms) or '(none)'}", "Representative documents:"]
    lines += [f"{i + 1}. {d['text']}" for i, d in enumerate(cluster.documents[:max_documents])]
    return "\n".join(lines)


def _parse_name(body: bytes) -> str:
    """The cluster name from a chat-completions response body; ValueError if unusable."""
    try:
        content = json.loads(body)["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise ValueError(f"unexpected response ({type(exc).__name__})") from exc
    if not isinstance(content, str):
        raise ValueError("the response content is not text")
    line = next((ln for ln in content.splitlines() if ln.strip()), "")
    marks = " \t\"'`*."
    name = re.sub(r"^(cluster\s+)?name\s*:", "", line.strip(marks), flags=re.IGNORECASE)
    name = name.strip(marks)
    if not name:
        raise ValueError("the response holds an empty name")
    if len(name) > MAX_NAME_CHARS:
        name = name[:MAX_NAME_CHARS].rsplit(" ", 1)[0].rstrip(",;:") + "…"
    return name


def _request_name(endpoint: _Endpoint, model: str, prompt: str, timeout: float) -> str:
    payload = {
        "model": model,
        "temperature": 0,
        "max_tokens": 24,
        "messages": [
            {"role": "system", "content": _SYSTEM_PROMPT},
            {"role": "user", "content": prompt},
        ],
    }
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if endpoint.authorization is not None:
        headers["Authorization"] = endpoint.authorization
    request = urllib.request.Request(
        endpoint.url, data=json.dumps(payload).encode(), headers=headers, method="POST"
    )
    try:
        with _opener(endpoint).open(request, timeout=timeout) as response:
            body = response.read(1_000_000)
    except urllib.error.HTTPError as exc:
        location = exc.headers.get("Location") if exc.headers is not None else None
        exc.close()
        if 300 <= exc.code < 400:
            target = f" to {_origin(location)}" if location else ""
            raise _EndpointDown(
                f"the endpoint answered with a redirect (HTTP {exc.code}){target}, which is not "
                f"followed: set {ENV_BASE_URL} to the final URL"
            ) from None
        raise ValueError(f"HTTP {exc.code}") from None
    except (TimeoutError, urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, TimeoutError) or isinstance(exc, TimeoutError):
            raise _EndpointDown(f"no answer within {timeout:g} s") from None
        raise _EndpointDown(f"connection failed ({type(reason).__name__})") from None
    return _parse_name(body)


def llm_labels(
    clusters,
    *,
    base_url: str | None = None,
    model: str | None = None,
    api_key: str | None = None,
    timeout: float = 20.0,
    max_documents: int = 3,
) -> LLMLabelResult:
    """Short cluster names from an OpenAI-compatible chat endpoint, with GIS fallback.

    Parameters
    ----------
    clusters : LabelSet or list of ClusterLabel
    base_url, model, api_key : str, optional
        Default to the environment variables ``GEM_LLM_BASE_URL``, ``GEM_LLM_MODEL``
        and ``GEM_LLM_API_KEY``. Without a base URL and a model nothing is called.
        The request is ``POST {base_url}/chat/completions`` with ``Authorization: Bearer
        {api_key}``, or HTTP Basic from ``https://user:password@host/...``. Credentials
        are refused over plain http except to localhost, 127.0.0.1 or ::1.
    timeout : float
        Seconds per request. After a timeout, a connection failure or a redirect (never
        followed) the remaining clusters are not attempted (they keep their GIS labels).
    max_documents : int
        Representative documents quoted per cluster.

    Returns
    -------
    LLMLabelResult
        HTTP errors and unusable answers fall back per cluster; ``message`` says which.

    Raises
    ------
    ValueError
        A base URL that is not http(s), credentials over plain http to a non-loopback host,
        credentials both in the URL and as a key, or a key unfit for an HTTP header. The
        message never holds a credential.
    """
    clusters = list(clusters)
    base_url = (base_url or os.environ.get(ENV_BASE_URL, "")).strip()
    model = (model or os.environ.get(ENV_MODEL, "")).strip()
    api_key = (api_key or os.environ.get(ENV_API_KEY, "")).strip() or None
    if not base_url or not model:
        missing = [n for n, v in ((ENV_BASE_URL, base_url), (ENV_MODEL, model)) if not v]
        message = f"LLM labeller not configured (set {' and '.join(missing)}); GIS labels kept"
        return LLMLabelResult(clusters=clusters, message=message, configured=False)
    if not timeout > 0:
        raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
    endpoint = _endpoint(base_url, api_key)
    renamed, failures, down = [], {}, None
    for cluster in clusters:
        if down is not None:
            failures[cluster.cluster] = f"not attempted after: {down}"
            renamed.append(cluster)
            continue
        try:
            name = _request_name(endpoint, model, _user_prompt(cluster, max_documents), timeout)
        except _EndpointDown as exc:
            down = str(exc)
            failures[cluster.cluster] = down
            renamed.append(cluster)
        except ValueError as exc:
            failures[cluster.cluster] = str(exc)
            renamed.append(cluster)
        else:
            renamed.append(_replace_label(cluster, name))
    n_ok = len(clusters) - len(failures)
    message = f"LLM labeller ({model}): {n_ok} of {len(clusters)} clusters named"
    if failures:
        reasons = "; ".join(f"cluster {k}: {why}" for k, why in failures.items())
        message += f"; GIS labels kept for {len(failures)} ({reasons})"
    return LLMLabelResult(clusters=renamed, message=message, configured=True, failures=failures)


def _replace_label(cluster: ClusterLabel, name: str) -> ClusterLabel:
    return dataclasses.replace(
        cluster, label=name, source="llm", gis_label=cluster.gis_label or cluster.label
    )
