"""Proxy data: the held-out split, per-domain token streams, and the mixture's data order.

- :func:`heldout_split`: a fixed stratified share of every stratum's documents (those long
  enough to score) is held out; it never enters a tokenizer or a training stream.
- :func:`build_streams`: each domain's training documents, tokenized and joined by
  end-of-text into one stream (cut into windows of ``context + 1`` tokens with stride
  ``context``, so one epoch predicts every token once).
- :func:`build_heldout`: the held-out documents as one stream, with the owner of every token.
- :func:`mixture_plan`: which window every training sequence reads. All proxies of a study
  share the data-order seed: sequence ``r`` takes the domain where a fixed uniform ``u_r``
  falls in the mixture's cumulative weights (common random numbers), and reads window
  ``perm_k[r mod n_k]`` of that domain (``perm_k`` a fixed permutation of its ``n_k``
  windows). Two mixtures therefore read the very same window at every position where they
  pick the same domain, and differ only where the weights move a row to another domain; that
  pairing is what makes differences between mixtures larger than the seed noise. A domain
  reads ``rows_k / n_k`` epochs on average (windows are sampled, so a window can repeat before
  every other one was read); one that reaches its epoch cap drops out and its rows go to the
  others (renormalised).
- :func:`balanced_plan`: every step holds the same number of sequences of every domain
  (DoReMi's batches).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from gem_app.mixing.weights import epoch_caps

#: Version of the data-order scheme below; part of a study's identity (a change retrains).
DATA_ORDER_VERSION = 2

__all__ = [
    "DATA_ORDER_VERSION",
    "TokenStreams",
    "HeldOut",
    "heldout_split",
    "build_streams",
    "build_heldout",
    "window_counts",
    "domain_caps",
    "mixture_plan",
    "balanced_plan",
    "WindowReader",
]


# ----------------------------------------------------------------------------- the split
def heldout_split(
    strata, eligible, *, share: float, max_docs: int | None = None, random_state=None
) -> np.ndarray:
    """Held-out mask: a fixed share of every stratum's eligible documents.

    Stratum ``s`` with ``n_s`` documents gives ``h_s = clip(round(share * n_s), 1, max_docs)``
    of its eligible documents (never all of its documents: one stays for training).

    Parameters
    ----------
    strata : array-like of shape (n_documents,)
        Stratum code per document (e.g. the run's cluster).
    eligible : array-like of bool, shape (n_documents,)
        Documents long enough to be scored.
    share : float
        In (0, 1).
    max_docs : int, optional
        At most this many held-out documents per stratum.
    random_state : int, Generator or None

    Returns
    -------
    ndarray of bool, shape (n_documents,)
    """
    strata = np.asarray(strata)
    eligible = np.asarray(eligible, dtype=bool)
    if strata.shape != eligible.shape or strata.ndim != 1:
        raise ValueError(f"strata {strata.shape} and eligible {eligible.shape} must be equal 1-D")
    if not 0 < share < 1:
        raise ValueError(f"the held-out share must be in (0, 1), got {share}")
    if max_docs is not None and max_docs < 1:
        raise ValueError(f"max_docs must be >= 1, got {max_docs}")
    rng = np.random.default_rng(random_state)
    held = np.zeros(strata.shape[0], dtype=bool)
    codes, inverse = np.unique(strata, return_inverse=True)
    for s in range(codes.size):
        members = np.flatnonzero(inverse == s)
        candidates = members[eligible[members]]
        want = max(1, int(round(share * members.size)))
        if max_docs is not None:
            want = min(want, int(max_docs))
        want = min(want, candidates.size, members.size - 1)
        if want > 0:
            held[rng.choice(candidates, size=want, replace=False)] = True
    return held


# ----------------------------------------------------------------------------- streams
@dataclass
class TokenStreams:
    """Training token streams, one per domain.

    Attributes
    ----------
    streams : list of ndarray of shape (L_k,), int32
        Documents of domain ``k`` in row order, each followed by end-of-text.
    owners : list of ndarray of shape (L_k,), int64
        Row of the corpus each token comes from (-1 for end-of-text).
    bytes : ndarray of shape (K,), int64
        UTF-8 bytes of each domain's training text.
    vocab_size : int
    """

    streams: list[np.ndarray]
    owners: list[np.ndarray]
    bytes: np.ndarray
    vocab_size: int

    @property
    def lengths(self) -> np.ndarray:
        """Tokens per domain, shape (K,), float64."""
        return np.array([s.size for s in self.streams], dtype=np.float64)

    def __len__(self) -> int:
        return len(self.streams)


def build_streams(
    token_lists: Sequence[np.ndarray],
    rows: np.ndarray,
    domain: np.ndarray,
    n_domains: int,
    *,
    eos_id: int,
    vocab_size: int,
    doc_bytes: np.ndarray,
) -> TokenStreams:
    """Join the tokens of training documents into one stream per domain.

    Parameters
    ----------
    token_lists : sequence of int32 arrays
        Tokens of each training document (aligned with ``rows``).
    rows : ndarray of shape (n,)
        Corpus row of each training document.
    domain : ndarray of shape (n,)
        Domain of each training document, in ``0..n_domains-1``.
    eos_id, vocab_size : int
    doc_bytes : ndarray of shape (n,)
        UTF-8 bytes of each document.
    """
    domain = np.asarray(domain, dtype=np.int64)
    streams, owners = [], []
    for k in range(n_domains):
        members = np.flatnonzero(domain == k)
        parts, who = [], []
        for i in members:
            tokens = token_lists[i]
            parts.append(np.append(tokens, eos_id).astype(np.int32))
            owner = np.full(tokens.size + 1, rows[i], dtype=np.int64)
            owner[-1] = -1
            who.append(owner)
        streams.append(np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32))
        owners.append(np.concatenate(who) if who else np.zeros(0, dtype=np.int64))
    per_domain = np.bincount(domain, weights=np.asarray(doc_bytes), minlength=n_domains)
    return TokenStreams(streams, owners, per_domain.astype(np.int64), int(vocab_size))


@dataclass
class HeldOut:
    """Held-out documents as one token stream.

    Attributes
    ----------
    tokens : ndarray of shape (M,), int32
        End-of-text, then every document followed by end-of-text.
    owner : ndarray of shape (M,), int64
        Index into the held-out documents of every token (-1 for end-of-text).
    rows : ndarray of shape (H,)
        Corpus row of each held-out document.
    doc_bytes : ndarray of shape (H,), int64
        UTF-8 bytes of each held-out document (the denominator of bits per byte).
    """

    tokens: np.ndarray
    owner: np.ndarray
    rows: np.ndarray
    doc_bytes: np.ndarray

    def __len__(self) -> int:
        return int(self.rows.size)


def build_heldout(
    token_lists: Sequence[np.ndarray], rows: np.ndarray, doc_bytes: np.ndarray, *, eos_id: int
) -> HeldOut:
    """The held-out stream of ``token_lists`` (aligned with ``rows`` and ``doc_bytes``)."""
    parts = [np.array([eos_id], dtype=np.int32)]
    who = [np.array([-1], dtype=np.int64)]
    for j, tokens in enumerate(token_lists):
        parts.append(np.append(tokens, eos_id).astype(np.int32))
        owner = np.full(tokens.size + 1, j, dtype=np.int64)
        owner[-1] = -1
        who.append(owner)
    return HeldOut(
        np.concatenate(parts),
        np.concatenate(who),
        np.asarray(rows),
        np.asarray(doc_bytes, dtype=np.int64),
    )


# ----------------------------------------------------------------------------- data order
def window_counts(lengths, context: int) -> np.ndarray:
    """Windows per domain: ``max(1, ceil((L_k - 1) / context))`` (0 for an empty domain)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    counts = np.maximum(1, -(-(lengths - 1) // context))
    return np.where(lengths > 0, counts, 0)


def domain_caps(lengths, *, context: int, rows: int, max_epochs: float | None) -> np.ndarray:
    """Largest weight of each domain under the epoch cap: ``E * windows_k / rows``.

    :func:`gem_app.mixing.weights.epoch_caps` with windows as tokens and the proxy's sequences
    as budget: a mixture ``w <= caps`` reads domain ``k`` at most ``E`` times in expectation
    (:func:`mixture_plan` enforces it exactly). ``inf`` everywhere when ``max_epochs`` is None.

    Parameters
    ----------
    lengths : array-like of shape (K,)
        Tokens of each domain's stream.
    context, rows : int
        Sequence length and sequences per proxy (``steps * batch_size``).
    max_epochs : float or None
    """
    n_windows = window_counts(lengths, context).astype(np.float64)
    caps, _ = epoch_caps(n_windows, max_epochs, float(rows), n_windows.size)
    return caps


def _windows(seed: int, domain: int, n_windows: int, rows: np.ndarray) -> np.ndarray:
    """Window read by each of ``rows`` in ``domain``: ``perm[row mod n_windows]``."""
    if rows.size == 0:
        return np.zeros(0, dtype=np.int64)
    perm = np.random.default_rng([int(seed), int(domain)]).permutation(int(n_windows))
    return perm[rows % n_windows]


def _capped_domains(u: np.ndarray, weights: np.ndarray, caps: np.ndarray) -> np.ndarray:
    """Domain of each row by inverse CDF of ``u``; a domain that used ``caps_k`` rows drops out.

    Parameters
    ----------
    u : ndarray of shape (R,), in [0, 1)
    weights : ndarray of shape (K,), non-negative, positive sum
    caps : ndarray of shape (K,)
        Rows each domain may take (``inf`` for none).
    """
    w = weights.astype(np.float64).copy()
    out = np.empty(u.size, dtype=np.int64)
    used = np.zeros(w.size)
    start = 0
    while start < u.size:
        if w.sum() <= 0:
            raise ValueError(
                "the epoch caps leave no data for the remaining sequences: raise max_epochs or "
                "lower the number of steps"
            )
        cdf = np.cumsum(w) / w.sum()
        cdf[-1] = 1.0
        chosen = np.minimum(np.searchsorted(cdf, u[start:], side="right"), w.size - 1)
        stop, full = u.size, -1
        for k in np.flatnonzero(w > 0):
            if not np.isfinite(caps[k]):
                continue
            room = int(caps[k] - used[k])
            hits = np.flatnonzero(chosen == k)
            if hits.size > room and start + hits[room] < stop:
                stop, full = start + hits[room], k
        out[start:stop] = chosen[: stop - start]
        used += np.bincount(out[start:stop], minlength=w.size)
        if full >= 0:
            w[full] = 0.0
        start = stop
    return out


def mixture_plan(
    lengths,
    weights,
    *,
    context: int,
    batch_size: int,
    steps: int,
    max_epochs: float | None,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Domain and window of every training sequence of a proxy.

    Parameters
    ----------
    lengths : array-like of shape (K,)
        Tokens of each domain's stream.
    weights : array-like of shape (K,)
        Mixture weights (normalised here); domains with no tokens must have weight 0.
    context, batch_size, steps : int
    max_epochs : float or None
        At most ``floor(max_epochs * windows_k)`` (and at least 1) sequences of domain ``k``.
    seed : int
        The data-order seed (shared by all proxies of a study).

    Returns
    -------
    domain : ndarray of shape (steps * batch_size,), int64
    window : ndarray of shape (steps * batch_size,), int64
        Sequence ``r`` is tokens ``window_r * context + [0, context]`` (modulo the stream
        length) of stream ``domain_r``.
    """
    w = np.asarray(weights, dtype=np.float64)
    n_windows = window_counts(lengths, context)
    if w.shape != n_windows.shape:
        raise ValueError(f"weights has shape {w.shape}, expected {n_windows.shape}")
    if np.any(~np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"weights must be finite, >= 0 and not all 0, got {w.tolist()}")
    empty = np.flatnonzero((n_windows == 0) & (w > 0))
    if empty.size:
        raise ValueError(f"domain {int(empty[0])} has no training tokens but weight {w[empty[0]]}")
    if max_epochs is None:
        caps = np.full(w.size, np.inf)
    else:
        caps = np.maximum(1.0, np.floor(max_epochs * n_windows))
    rows = int(steps) * int(batch_size)
    u = np.random.default_rng(int(seed)).random(rows)
    domain = _capped_domains(u, w / w.sum(), caps)
    window = np.empty(rows, dtype=np.int64)
    for k in range(w.size):
        where = np.flatnonzero(domain == k)
        window[where] = _windows(seed, k, int(n_windows[k]), where)
    return domain, window


def balanced_plan(
    lengths, *, context: int, rows_per_domain: int, steps: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Every step holds ``rows_per_domain`` sequences of every non-empty domain (DoReMi).

    Returns ``domain`` and ``window`` of shape (steps * rows_per_domain * K_nonempty,), grouped
    by step; windows are chosen as in :func:`mixture_plan`.
    """
    n_windows = window_counts(lengths, context)
    present = np.flatnonzero(n_windows > 0)
    per_step = np.repeat(present, int(rows_per_domain))
    domain = np.tile(per_step, int(steps))
    window = np.empty(domain.size, dtype=np.int64)
    for k in present:
        where = np.flatnonzero(domain == k)
        window[where] = _windows(seed, int(k), int(n_windows[k]), where)
    return domain, window


class WindowReader:
    """Reads training sequences ``(domain, window)`` out of the streams as torch tensors.

    Parameters
    ----------
    streams : TokenStreams
    context : int
    device : torch.device
    """

    def __init__(self, streams: TokenStreams, context: int, device):
        self.lengths = np.array([s.size for s in streams.streams], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)
        self.flat = np.concatenate(streams.streams).astype(np.int64)
        self.context = int(context)
        self.device = device
        self._span = np.arange(self.context + 1, dtype=np.int64)

    def read(self, domain: np.ndarray, window: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets, LongTensors of shape (len(domain), context)."""
        start = window[:, None] * self.context + self._span[None, :]
        index = self.offsets[domain][:, None] + start % self.lengths[domain][:, None]
        seq = torch.from_numpy(self.flat[index]).to(self.device)
        return seq[:, :-1], seq[:, 1:]
