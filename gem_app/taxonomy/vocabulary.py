"""The corpus vocabulary for labels: a binary document-term matrix of unigrams and bigrams.

scikit-learn's CountVectorizer with English stop words and document-frequency bounds; a corpus
whose texts yield no term at all gives an empty vocabulary and a note saying why, never an error.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import CountVectorizer

from gem_app.io.records import check_texts
from gem_app.utils.validation import check_int

__all__ = ["build_vocabulary"]


def _check_df(name: str, value) -> None:
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be an int >= 1 or a float in (0, 1], got {value!r}")
    if isinstance(value, (int, np.integer)):
        if value < 1:
            raise ValueError(f"{name} as a document count must be >= 1, got {value}")
    elif isinstance(value, (float, np.floating)):
        if not 0 < value <= 1:
            raise ValueError(f"{name} as a proportion must be in (0, 1], got {value}")
    else:
        raise ValueError(f"{name} must be an int >= 1 or a float in (0, 1], got {value!r}")


def build_vocabulary(
    texts,
    *,
    min_df: int | float = 2,
    max_df: int | float = 0.95,
    ngram_range: tuple[int, int] = (1, 2),
    max_features: int | None = 50_000,
) -> tuple[sp.csr_matrix, np.ndarray, str]:
    """Binary document-term matrix of unigrams and bigrams, English stop words removed.

    Parameters
    ----------
    texts : sequence of str, length N
    min_df, max_df : int or float
        Document-frequency bounds as in ``CountVectorizer`` (count, or proportion of N).
    ngram_range : (int, int)
    max_features : int or None
        Keep the most frequent terms only.

    Returns
    -------
    presence : csr_matrix of shape (N, V), float64 in {0, 1}
    terms : ndarray of shape (V,), str
    note : str
        Empty, or why the vocabulary is empty (V = 0): every text empty after stop
        words, or every term pruned by ``min_df``/``max_df``. Never raises for that.
    """
    _check_df("min_df", min_df)
    _check_df("max_df", max_df)
    if max_features is not None:
        check_int(max_features, "max_features", minimum=1)
    texts = check_texts(texts)
    vectorizer = CountVectorizer(
        ngram_range=tuple(ngram_range),
        stop_words="english",
        min_df=min_df,
        max_df=max_df,
        max_features=max_features,
        binary=True,
        dtype=np.float64,
    )
    try:
        presence = vectorizer.fit_transform(texts)
    except ValueError as exc:  # empty vocabulary, or nothing left after pruning
        empty = sp.csr_matrix((len(texts), 0), dtype=np.float64)
        return empty, np.array([], dtype=str), f"empty vocabulary ({exc})"
    return sp.csr_matrix(presence), vectorizer.get_feature_names_out(), ""
