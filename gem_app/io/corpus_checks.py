"""Warnings about a valid corpus that would still mislead a fit: one huge document.

GEM weighs every document by its tokens. A document that holds a large share of all tokens
is a single point carrying that much mass: it takes a cluster by itself, and the mixture
built on the clusters then mostly re-weights one text (a 10 MB dump holding 99% of the
tokens collapses the fit). Such a document is kept, but named in a warning.

The rule (:func:`huge_document_warnings`): a document is *huge* when it holds more than
``HUGE_DOCUMENT_SHARE = 10%`` of all tokens **and** at least ``HUGE_DOCUMENT_MEDIAN_RATIO = 10``
times the median document's tokens.

- 10% of the mass is a whole cluster's typical share at K = 10, the low end of the cluster
  counts GEM is run with; above it, the document alone outweighs a typical cluster. (The
  bundled 5,000-document sample's largest document holds 0.7%.)
- The median guard keeps small corpora of similar documents quiet: five equal documents
  hold 20% each, and none of them is an outlier.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "HUGE_DOCUMENT_MEDIAN_RATIO",
    "HUGE_DOCUMENT_SHARE",
    "CorpusWarning",
    "huge_document_warnings",
]

HUGE_DOCUMENT_SHARE = 0.10
HUGE_DOCUMENT_MEDIAN_RATIO = 10.0


@dataclass(frozen=True)
class CorpusWarning:
    """One warning about a valid row; ``str(warning)`` is its one-line message.

    Attributes
    ----------
    kind : str
        ``"huge_document"``.
    row : int
        0-based row number in the file (as in ``Corpus.rejected``).
    id : object
        The document id.
    tokens : int
        The document's tokens.
    share : float
        Its share of all tokens of the valid rows, in (0, 1].
    message : str
        What is wrong and what to do, naming the row, the id and the share.
    """

    kind: str
    row: int
    id: object
    tokens: int
    share: float
    message: str

    def __str__(self) -> str:
        return self.message


def huge_document_warnings(tokens, rows, ids) -> list[CorpusWarning]:
    """Warnings for the documents that hold too much of the token mass, in row order.

    Parameters
    ----------
    tokens : array-like of int, shape (n,)
        Token count of each valid document (>= 1).
    rows : array-like of int, shape (n,)
        File row number of each document.
    ids : sequence, length n
        Document ids.

    Returns
    -------
    list of CorpusWarning
        One per document with ``share > HUGE_DOCUMENT_SHARE`` and
        ``tokens >= HUGE_DOCUMENT_MEDIAN_RATIO * median``.
    """
    counts = np.asarray(tokens, dtype=np.float64)
    if counts.size == 0:
        return []
    total = counts.sum()
    median = float(np.median(counts))
    share = counts / total
    huge = (share > HUGE_DOCUMENT_SHARE) & (counts >= HUGE_DOCUMENT_MEDIAN_RATIO * median)
    warnings = []
    for i in np.flatnonzero(huge):
        row, doc_id, n = int(rows[i]), ids[i], int(counts[i])
        message = (
            f"row {row} (id {doc_id!r}): one document holds {_percent(share[i])} of all tokens "
            f"({n} of {int(total)}; {n / median:.0f} x the median document). GEM weighs "
            "documents by tokens, so it can take a cluster alone and dominate the mixture: "
            "split it into smaller documents or leave it out"
        )
        warnings.append(CorpusWarning("huge_document", row, doc_id, n, float(share[i]), message))
    return warnings


def _percent(share: float) -> str:
    """``share`` as a percentage with one decimal; never "100.0%" for less than all."""
    text = f"{100 * share:.1f}%"
    return ">99.9%" if text == "100.0%" and share < 1 else text
