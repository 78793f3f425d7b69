"""Per-cluster weights of a mixture over domains (gem_app.app.chosen)."""

import numpy as np
import pytest

from gem_app.app.chosen import (
    ChosenWeights,
    _spread,
    cluster_weights,
    natural_cluster_weights,
)


def _reference(document_domain, domain_weights, clusters, tokens, n_clusters):
    """Document by document: w_d * t_i / T_d added to the document's cluster."""
    total = {}
    for d, t in zip(document_domain, tokens, strict=True):
        total[d] = total.get(d, 0.0) + t
    out = [0.0] * n_clusters
    for d, k, t in zip(document_domain, clusters, tokens, strict=True):
        if total[d] > 0:
            out[k] += domain_weights[d] * t / total[d]
    return out


def test_clusters_as_domains_give_the_weights_back():
    rng = np.random.default_rng(0)
    clusters = rng.integers(4, size=50)
    clusters[:4] = range(4)
    w = np.array([0.1, 0.2, 0.3, 0.4])
    got = cluster_weights(clusters, w, clusters, rng.integers(1, 90, size=50), 4)
    np.testing.assert_allclose(got, w, rtol=1e-12)


def test_split_merge_and_excluded_domains():
    # clusters 0..3; domains: 0 = cluster 0, 1 and 2 = the two halves of cluster 1,
    # 3 = clusters 2 and 3 merged (tokens 30 and 10), 4 = nothing left (excluded, weight 0)
    clusters = np.array([0, 0, 1, 1, 1, 2, 3])
    domain = np.array([0, 0, 1, 2, 2, 3, 3])
    tokens = np.array([5.0, 5.0, 4.0, 3.0, 3.0, 30.0, 10.0])
    w = np.array([0.1, 0.2, 0.3, 0.4, 0.0])
    got = cluster_weights(domain, w, clusters, tokens, 4)
    np.testing.assert_allclose(got, [0.1, 0.5, 0.4 * 0.75, 0.4 * 0.25], rtol=1e-12)
    np.testing.assert_allclose(got.sum(), 1.0)


def test_spread_matches_a_document_by_document_reference():
    rng = np.random.default_rng(3)
    n, n_domains, n_clusters = 400, 9, 6
    domain = rng.integers(n_domains, size=n)
    clusters = rng.integers(n_clusters, size=n)
    tokens = rng.integers(0, 50, size=n).astype(float)
    tokens[domain == 4] = 0.0  # a domain without tokens passes nothing on
    w = rng.dirichlet(np.ones(n_domains))
    got = _spread(domain, w, clusters, tokens, n_clusters)
    np.testing.assert_allclose(got, _reference(domain, w, clusters, tokens, n_clusters), rtol=1e-12)
    np.testing.assert_allclose(got.sum(), 1.0 - w[4], rtol=1e-12)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="document_domain must be in 0..1"):
        cluster_weights([0, 2], [0.5, 0.5], [0, 1], [1, 1], 2)
    with pytest.raises(ValueError, match="clusters must be in 0..1"):
        cluster_weights([0, 1], [0.5, 0.5], [0, 2], [1, 1], 2)
    with pytest.raises(ValueError, match="one length"):
        cluster_weights([0, 1], [0.5, 0.5], [0, 1, 1], [1, 1], 2)
    with pytest.raises(ValueError, match="n_clusters must be a positive integer"):
        cluster_weights([0], [1.0], [0], [1], 0)


def test_natural_cluster_weights_are_token_shares():
    np.testing.assert_allclose(natural_cluster_weights([10, 30, 60]), [0.1, 0.3, 0.6])
    np.testing.assert_allclose(natural_cluster_weights([0, 0]), [0.5, 0.5])


def test_chosen_weights_apply_to_their_fit_version_only():
    chosen = ChosenWeights("fit-a", "v2", np.array([0.25, 0.75]), "tau = 2")
    assert chosen.applies_to("fit-a", "v2", 2)
    assert not chosen.applies_to("fit-b", "v2", 2)  # another fit
    assert not chosen.applies_to("fit-a", "v3", 2)  # the fit's taxonomy changed since
    assert not chosen.applies_to("fit-a", "v2", 3)
