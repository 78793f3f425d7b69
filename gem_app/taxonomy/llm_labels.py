"""Optional LLM names for clusters through an OpenAI-compatible chat endpoint.

``llm_labels`` renames clusters (:class:`gem_app.taxonomy.labels.ClusterLabel`, or anything with
the same fields: ``cluster``, ``label``, ``terms``, ``documents``, ``gis_label``,
``source``) through an endpoint the user configures (``GEM_LLM_BASE_URL``,
``GEM_LLM_MODEL``, ``GEM_LLM_API_KEY``). It never opens a connection unless configured,
and every failure falls back to the GIS label and says so. The GIS labels stay the
default everywhere.
"""

from __future__ import annotations

import dataclasses
import http.client
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
    """Timeout or connection failure: the remaining clusters are not attempted."""


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


def _request_name(url: str, model: str, api_key: str | None, prompt: str, timeout: float) -> str:
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
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            body = response.read(1_000_000)
    except urllib.error.HTTPError as exc:
        raise ValueError(f"HTTP {exc.code}") from exc
    except (TimeoutError, urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, TimeoutError) or isinstance(exc, TimeoutError):
            raise _EndpointDown(f"no answer within {timeout:g} s") from exc
        raise _EndpointDown(f"connection failed ({type(reason).__name__})") from exc
    return _parse_name(body)


def _endpoint(base_url: str) -> str:
    parts = urllib.parse.urlparse(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"LLM base URL must be http(s)://host[:port][/path], got {base_url!r}")
    return base_url.rstrip("/") + "/chat/completions"


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
        The request is ``POST {base_url}/chat/completions``.
    timeout : float
        Seconds per request. After a timeout or connection failure the remaining
        clusters are not attempted (they keep their GIS labels).
    max_documents : int
        Representative documents quoted per cluster.

    Returns
    -------
    LLMLabelResult
        HTTP errors and unusable answers fall back per cluster; ``message`` says which.
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
    url = _endpoint(base_url)
    renamed, failures, down = [], {}, None
    for cluster in clusters:
        if down is not None:
            failures[cluster.cluster] = f"not attempted after: {down}"
            renamed.append(cluster)
            continue
        try:
            name = _request_name(url, model, api_key, _user_prompt(cluster, max_documents), timeout)
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
