"""The MM (block-ascent) steps of GEM, on row chunks, in torch.

Notation follows ../shared/design/METHOD.md and docs/method.md. Rows are
processed in chunks: the corrected points x_i (on the sphere, anisotropy
removed) are formed chunk by chunk in the compute dtype and kept only when they
fit a memory budget, so that the N x K score matrix (in the compute dtype:
float32 for float32 input) is the one large buffer, and only while the dual
needs it. Statistics are accumulated in float64.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from scipy import optimize

from gem_app.core.vmf import log_normalizer, solve_kappa

KAPPA_MIN = 1e-3
KAPPA_MAX = 1e5


def resolve_device(device: str | torch.device, X=None) -> torch.device:
    """``"auto"`` picks the input's device for tensors, else CUDA when torch sees it, else CPU."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if isinstance(X, torch.Tensor):
            return X.device
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was asked for but torch sees no CUDA device")
    return torch.device(device)


def compute_dtype(X) -> torch.dtype:
    """float64 input is computed in float64, everything else in float32."""
    dtype = X.dtype
    if dtype in (np.float64, torch.float64):
        return torch.float64
    return torch.float32


def chunk_rows(n_features: int, n_clusters: int, device: torch.device) -> int:
    """Rows per chunk: 2^24 (CPU) or 2^27 (GPU) elements in the widest chunk buffer.

    Large chunks keep the number of small element-wise kernels per pass low; the buffers
    stay far below the N x K score cache (64 MB of float32 on CPU).
    """
    budget = (2**27 if device.type == "cuda" else 2**24) // max(n_features, n_clusters, 1)
    return int(min(max(budget, 256), 1 << 20))


def entropy(p: np.ndarray) -> float:
    """Shannon entropy in nats of a probability vector, with 0 log 0 = 0."""
    p = np.asarray(p, dtype=np.float64)
    nz = p[p > 0]
    return float(-(nz * np.log(nz)).sum())


POINT_CACHE_BYTES = 2**30


class Rows:
    """The input rows as chunks of corrected points x_i on the compute device.

    x_i = normalize(L (u_i - m)) with u_i = e_i / ||e_i|| (m = 0 without centring,
    L = I without whitening), computed in the compute dtype. The points are cached
    when the input had to be copied anyway (another dtype or device) or when they
    take less than POINT_CACHE_BYTES; otherwise each pass recomputes them from the
    input rows, with the same arithmetic, so both paths give identical numbers.

    Parameters
    ----------
    X : ndarray or Tensor, shape (n_samples, n_features)
    sample_weight : ndarray, shape (n_samples,), float64
    mean : ndarray, shape (n_features,) or None
    whitening : ndarray, shape (n_features, n_features) or None

    Raises
    ------
    ValueError
        When a row's corrected vector L(u_i - m) is zero (it has no direction).
    """

    def __init__(self, X, sample_weight, mean, whitening, *, device, dtype, chunk_size):
        self.X, self.device, self.dtype = X, device, dtype
        n, d = X.shape
        self.bounds = [(a, min(a + chunk_size, n)) for a in range(0, n, chunk_size)]
        self.mean = None if mean is None else torch.as_tensor(mean, device=device, dtype=dtype)
        self.whitening_t = (
            None
            if whitening is None
            else torch.as_tensor(whitening.T, device=device, dtype=dtype).contiguous()
        )
        self.weight = [
            torch.as_tensor(sample_weight[a:b], device=device, dtype=torch.float64)
            for a, b in self.bounds
        ]
        self.weight_c = [w.to(dtype) for w in self.weight]  # in the compute dtype, for GEMVs
        self.total_weight = float(np.sum(sample_weight))
        self.n_rows, self.n_features = n, d
        itemsize = torch.finfo(dtype).bits // 8
        copied = not (
            isinstance(X, np.ndarray | torch.Tensor)
            and device.type == "cpu"
            and X.dtype in (np.float32, np.float64, torch.float32, torch.float64)
        )
        self._cache = [] if copied or n * d * itemsize <= POINT_CACHE_BYTES else None
        degenerate: list[int] = []
        for j, (a, _) in enumerate(self.bounds):
            x, bad = self._compute(j)
            if bool(bad.any()):
                degenerate.extend((a + torch.nonzero(bad).flatten().cpu().numpy()).tolist())
            if self._cache is not None:
                self._cache.append(x)
        if degenerate:
            shown = ", ".join(str(i) for i in degenerate[:10])
            more = f" and {len(degenerate) - 10} more" if len(degenerate) > 10 else ""
            raise ValueError(
                f"rows {shown}{more} coincide with the mean direction, so they have no direction "
                "left after the anisotropy correction; remove them or use center=False"
            )

    def __len__(self) -> int:
        return len(self.bounds)

    def _compute(self, j: int):
        a, b = self.bounds[j]
        e = torch.as_tensor(self.X[a:b]).to(device=self.device, dtype=self.dtype)
        v = e / torch.linalg.vector_norm(e, dim=1, keepdim=True)
        if self.mean is not None:
            v.sub_(self.mean)
        if self.whitening_t is not None:
            v = v @ self.whitening_t
        norm = torch.linalg.vector_norm(v, dim=1, keepdim=True)
        bad = norm[:, 0] <= 1e-6
        return v.div_(norm), bad

    def points(self, j: int) -> torch.Tensor:
        """x for chunk j, shape (n_j, n_features), compute dtype."""
        return self._cache[j] if self._cache is not None else self._compute(j)[0]

    def gather(self, indices) -> np.ndarray:
        """x for the given row indices as float64 numpy, shape (len(indices), n_features)."""
        indices = np.asarray(indices, dtype=np.int64)
        starts = np.array([a for a, _ in self.bounds])
        which = np.searchsorted(starts, indices, side="right") - 1
        out = np.empty((len(indices), self.n_features))
        for j in np.unique(which):
            pos = np.flatnonzero(which == j)
            local = torch.as_tensor(indices[pos] - starts[j], device=self.device)
            out[pos] = self.points(int(j))[local].to(torch.float64).cpu().numpy()
        return out


@dataclass
class RowWeights:
    """Row masses a_i by chunk: all that the dual's passes need of the rows.

    :class:`Rows` has the same attributes; this stands alone for scores that were
    computed elsewhere (the app's frozen-geometry re-assignment).
    """

    weight: list  # float64 tensors, one per chunk
    weight_c: list  # the same in the compute dtype
    total_weight: float
    device: torch.device
    dtype: torch.dtype

    @classmethod
    def from_array(cls, weights: np.ndarray, bounds, *, device, dtype) -> RowWeights:
        chunks = [
            torch.as_tensor(weights[a:b], dtype=torch.float64, device=device) for a, b in bounds
        ]
        return cls(chunks, [w.to(dtype) for w in chunks], float(np.sum(weights)), device, dtype)


def prepare_rows(X, sample_weight, mean, whitening, *, device, dtype, chunk_size) -> Rows:
    """Chunk X into corrected points on ``device`` (see :class:`Rows`)."""
    return Rows(
        X, sample_weight, mean, whitening, device=device, dtype=dtype, chunk_size=chunk_size
    )


@dataclass
class Params:
    """vMF parameters in float64 numpy: mean directions (K, d), concentrations (K,), log prior (K,)."""

    mean_directions: np.ndarray
    concentrations: np.ndarray
    log_prior: np.ndarray

    @property
    def bias(self) -> np.ndarray:
        """b_k = log C_d(kappa_k) + log pi_k, shape (K,)."""
        d = self.mean_directions.shape[1]
        return log_normalizer(d, self.concentrations) + self.log_prior


class ScoreMap:
    """s_ik = kappa_k mu_k . x_i + log C_d(kappa_k) + log pi_k for one parameter set, by chunk."""

    def __init__(self, params: Params, *, device, dtype):
        w = params.concentrations[:, None] * params.mean_directions
        self.weight_t = torch.as_tensor(w.T, device=device, dtype=dtype).contiguous()
        self.bias = torch.as_tensor(params.bias, device=device, dtype=dtype)

    def __call__(self, rows: Rows, j: int, out: torch.Tensor | None = None) -> torch.Tensor:
        if out is None:
            return torch.addmm(self.bias, rows.points(j), self.weight_t)
        return torch.addmm(self.bias, rows.points(j), self.weight_t, out=out)


@dataclass
class QStats:
    """Weighted statistics of one soft assignment q = softmax((s + eta)/T), all float64.

    masses : (K,) rho_k = sum_i a_i q_ik / A
    second_moments : (K, K) sum_i a_i q_i q_i^T / A, or its diagonal (K,) when K is large
    mean_lse : float, (1/A) sum_i a_i logsumexp_k((s_ik + eta_k)/T)
    """

    masses: np.ndarray
    second_moments: np.ndarray
    mean_lse: float

    def objective(self, eta: np.ndarray, temperature: float, balance: float) -> float:
        return objective(self.masses, self.mean_lse, eta, temperature, balance)

    def dual(self, eta: np.ndarray, temperature: float, balance: float) -> float:
        """g(eta) = T mean_lse + lambda logsumexp(-eta / lambda)."""
        v = -eta / balance
        top = v.max()
        return float(temperature * self.mean_lse + balance * (top + np.log(np.exp(v - top).sum())))


def _chunk_q(s: torch.Tensor, eta_t: torch.Tensor, temperature: float):
    """q = softmax((s + eta)/T) by row and its log-partition, in one buffer (s is not modified)."""
    z = s + eta_t
    if temperature != 1.0:
        z.div_(temperature)
    top = z.amax(dim=1, keepdim=True)
    # Terms below exp(floor) of the row's largest are set to exactly 0: they are far below
    # the dtype's resolution, and as tiny q they would make subnormal numbers in exp and in
    # the q^T x GEMM, which x86 processors compute 10-100x slower.
    floor = -30.0 if z.dtype != torch.float64 else -600.0
    z.sub_(top).clamp_(min=floor - 50.0).exp_()  # clamped: exp stays clear of subnormals
    torch.nn.functional.threshold_(z, math.exp(floor), 0.0)
    total = z.sum(dim=1, keepdim=True)
    z.div_(total)
    return z, (top + total.log()).squeeze(1)


FULL_NEWTON_MAX_K = 256


def assignment_stats(
    scores,
    rows: Rows,
    eta: np.ndarray,
    temperature: float,
    *,
    precise: bool = True,
    full: bool | None = None,
) -> QStats:
    """rho(eta), the second moments and the mean log-partition from score chunks.

    ``scores`` is any iterable of the (n_j, K) chunks in order: cached, or a generator
    that computes (and caches) them, so that the statistics are formed while each chunk
    is still in the processor's cache.

    ``precise``: evaluate q in float64 (the dual solver compares values of g that differ by
    far less than float32 resolution near its optimum); otherwise in the scores' dtype, with
    float64 accumulation (enough for one Newton step). ``full``: form the (K, K) second
    moment (a K x N x K GEMM per pass); default K <= FULL_NEWTON_MAX_K, else its diagonal.
    """
    K = len(eta)
    full = K <= FULL_NEWTON_MAX_K if full is None else full
    device = rows.device
    dtype = torch.float64 if precise else rows.dtype
    masses = torch.zeros(K, dtype=torch.float64, device=device)
    squares = torch.zeros((K, K) if full else K, dtype=torch.float64, device=device)
    lse_sum = torch.zeros((), dtype=torch.float64, device=device)
    eta_t = torch.as_tensor(eta, device=device, dtype=dtype)
    weights = rows.weight if precise else rows.weight_c
    for s, a in zip(scores, weights, strict=True):
        q, lse = _chunk_q(s.to(dtype), eta_t, temperature)
        masses += (a @ q).to(torch.float64)
        lse_sum += (a @ lse).to(torch.float64)
        if full:  # the Hessian only steers Newton steps: the compute dtype is precise enough
            qc = q.to(rows.dtype)
            squares += (qc * a.to(rows.dtype)[:, None]).T.matmul(qc).to(torch.float64)
        else:
            squares += (a @ (q * q)).to(torch.float64)
    A = rows.total_weight
    return QStats((masses / A).cpu().numpy(), (squares / A).cpu().numpy(), float(lse_sum) / A)


def newton_step(eta: np.ndarray, stats: QStats, temperature: float, balance: float) -> np.ndarray:
    """One Newton step on the dual g from ``eta`` (stats = q(eta)'s statistics).

    Uses the full Hessian when ``stats.second_moments`` is (K, K), else its diagonal; the
    step is taken in the subspace sum(eta) = 0 (g is invariant to a common shift).
    """
    K = len(eta)
    beta = _softmax(-eta / balance)
    grad = stats.masses - beta
    second = stats.second_moments
    if second.ndim == 2:
        hessian = (np.diag(stats.masses) - second) / temperature
        hessian += (np.diag(beta) - np.outer(beta, beta)) / balance
        hessian = 0.5 * (hessian + hessian.T) + 1.0 / K  # lift the all-ones null direction
        try:
            step = np.linalg.solve(hessian, -grad)
        except np.linalg.LinAlgError:
            step = -grad / np.maximum(np.diag(hessian), 1e-300)
    else:
        curvature = (stats.masses - second) / temperature + beta * (1 - beta) / balance
        step = -grad / np.maximum(curvature, 1e-300)
    new = eta + step
    return new - new.mean()


def solve_dual(
    scores: list,
    rows: Rows,
    eta: np.ndarray,
    temperature: float,
    balance: float,
    *,
    floor: float,
    gap_tol: float,
    max_passes: int = 500,
) -> tuple[np.ndarray, QStats, int]:
    """Minimise the convex dual g(eta) over cached scores; return eta and q(eta)'s statistics.

    g(eta) = T (1/A) sum_i a_i logsumexp_k((s_ik + eta_k)/T) + lambda logsumexp(-eta/lambda)
    has gradient rho(eta) - beta(eta), beta = softmax(-eta / lambda), and Hessian
    (diag(rho) - E[q q^T]) / T + (diag(beta) - beta beta^T) / lambda, all from one pass
    over the scores. g is invariant to a common shift of eta; the penalty
    (sum eta)^2 / (2K) fixes the shift without moving the minimiser. It is minimised by
    scipy's trust-region Newton ("trust-exact", K <= FULL_NEWTON_MAX_K) or L-BFGS-B: a
    trust region copes with nearly hard assignments (small T), where g is almost
    piecewise linear and plain Newton steps overshoot.

    The duality gap of eta is g(eta) - J(q(eta)) = lambda KL(rho(eta) || beta(eta)).
    The solve is tightened until the gap is below ``gap_tol`` and J(q(eta)) >= ``floor``
    (the objective before this q-step, so that J never decreases), or ``max_passes``
    passes were spent.

    Returns
    -------
    eta : ndarray (K,), stats : QStats of q(eta), passes : int
    """
    K = len(eta)
    cache: dict[bytes, QStats] = {}

    def stats_at(v: np.ndarray) -> QStats:
        key = v.tobytes()
        if key not in cache:
            cache.clear() if len(cache) > 8 else None
            cache[key] = assignment_stats(scores, rows, v, temperature)
        return cache[key]

    passes = [0]

    def value_and_grad(v):
        st = stats_at(v)
        passes[0] += 1
        beta = _softmax(-v / balance)
        shift = v.sum()
        return st.dual(v, temperature, balance) + shift**2 / (2 * K), st.masses - beta + shift / K

    def hessian(v):
        st = stats_at(v)
        beta = _softmax(-v / balance)
        second = st.second_moments
        h = (np.diag(st.masses) - second) / temperature
        h += (np.diag(beta) - np.outer(beta, beta)) / balance + 1.0 / K
        return 0.5 * (h + h.T)

    eta = np.asarray(eta, dtype=np.float64) - np.mean(eta)
    full = K <= FULL_NEWTON_MAX_K
    gtol = None
    while True:
        stats = stats_at(eta)
        gap = duality_gap(stats.masses, eta, balance)
        if gtol is None:
            # gap ~ (lambda/2) sum_k (rho_k - beta_k)^2 / beta_k: a gradient this small meets gap_tol
            beta_min = _softmax(-eta / balance).min()
            gtol = float(np.sqrt(2.0 * gap_tol * beta_min / (balance * K)))
        if (gap <= gap_tol and stats.objective(eta, temperature, balance) >= floor) or (
            passes[0] >= max_passes or gtol < 1e-15
        ):
            return eta, stats, passes[0]
        budget = max(max_passes - passes[0], 1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # precision-loss notes near the optimum
            if full:
                result = optimize.minimize(
                    value_and_grad,
                    eta,
                    jac=True,
                    hess=hessian,
                    method="trust-exact",
                    options={"gtol": gtol, "maxiter": budget},
                )
            else:
                result = optimize.minimize(
                    value_and_grad,
                    eta,
                    jac=True,
                    method="L-BFGS-B",
                    options={"gtol": gtol, "ftol": 0.0, "maxiter": budget, "maxfun": budget},
                )
        eta = result.x - result.x.mean()
        gtol *= 1e-3


def objective(masses, mean_lse: float, eta, temperature: float, balance: float) -> float:
    """J(q(eta)) = T mean_lse - rho . eta + lambda H(rho), from one pass's statistics.

    (docs/method.md: sum_k q_ik s_ik + T H(q_i) = T logsumexp_k((s_ik + eta_k)/T) - q_i . eta.)
    """
    return float(temperature * mean_lse - masses @ eta + balance * entropy(masses))


def duality_gap(masses, eta, balance: float) -> float:
    """g(eta) - J(q(eta)) = lambda KL(rho(eta) || softmax(-eta / lambda)); 0 when lambda = 0."""
    if balance == 0.0:
        return 0.0
    return balance * _kl(masses, _softmax(-np.asarray(eta) / balance))


def _softmax(v: np.ndarray) -> np.ndarray:
    v = v - v.max()
    e = np.exp(v)
    return e / e.sum()


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    nz = p > 0
    return float(np.sum(p[nz] * (np.log(p[nz]) - np.log(np.maximum(q[nz], 1e-300)))))


@dataclass
class Resultants:
    """Sufficient statistics of a q-step for the (mu, kappa)-step, all float64 numpy.

    counts : (K,) n_k = sum_i a_i q_ik
    resultants : (K, d) r_k = sum_i a_i q_ik x_i
    labels : (N,) int64 argmax_k q_ik, or None when the pass did not form them
    row_lse : (N,) float64, logsumexp_k((s_ik + eta_k)/T): low values are badly fitted rows
    mean_lse : float
    second_moments : (K, K) or (K,) sum_i a_i q_i q_i^T / A (or its diagonal), when asked
    """

    counts: np.ndarray
    resultants: np.ndarray
    labels: np.ndarray
    row_lse: np.ndarray
    mean_lse: float
    second_moments: np.ndarray | None = None

    @property
    def masses(self) -> np.ndarray:
        return self.counts / self.counts.sum()


def resultant_pass(
    score_chunk,
    rows: Rows,
    eta: np.ndarray | None,
    temperature: float,
    *,
    hard: bool = False,
    labels: bool = False,
    second_moments: str | None = None,
) -> Resultants:
    """One pass computing q (soft, or one-hot argmax when ``hard``) and the resultants r_k.

    ``score_chunk(j)`` returns the score chunk j (cached or freshly computed). The hard
    labels argmax_k q_ik are formed only when ``labels`` (the last pass of a fit).
    ``second_moments`` "full" or "diag" also accumulates E_a[q q^T] (or its diagonal),
    for a Newton step on the dual.
    """
    device, dtype = rows.device, rows.dtype
    first = score_chunk(0)
    K = first.shape[1]
    eta_t = torch.as_tensor(np.zeros(K) if eta is None else eta, device=device, dtype=dtype)
    resultants = torch.zeros((K, rows.n_features), dtype=torch.float64, device=device)
    counts = torch.zeros(K, dtype=torch.float64, device=device)
    moments = None
    if second_moments is not None:
        shape = (K, K) if second_moments == "full" else (K,)
        moments = torch.zeros(shape, dtype=torch.float64, device=device)
    hard_labels, row_lse = [], []
    for j in range(len(rows)):
        s = first if j == 0 else score_chunk(j)
        if hard:
            lab = torch.argmax(s, dim=1)
            q = torch.nn.functional.one_hot(lab, K).to(dtype)
            lse = s.amax(dim=1)
        else:
            q, lse = _chunk_q(s, eta_t, temperature)
            lab = torch.argmax(q, dim=1) if labels else None
        a = rows.weight_c[j]
        counts += (a @ q).to(torch.float64)
        if second_moments == "full":
            aq = q * a[:, None]
            moments += aq.T.matmul(q).to(torch.float64)
        else:
            if second_moments == "diag":
                moments += (a @ (q * q)).to(torch.float64)
            aq = q.mul_(a[:, None])
        resultants += aq.T.matmul(rows.points(j)).to(torch.float64)
        if lab is not None:
            hard_labels.append(lab)
        row_lse.append(lse)
    lse_all = torch.cat(row_lse).to(torch.float64).cpu().numpy()
    weights = torch.cat(rows.weight).cpu().numpy()
    return Resultants(
        counts=counts.cpu().numpy(),
        resultants=resultants.cpu().numpy(),
        labels=torch.cat(hard_labels).cpu().numpy().astype(np.int64) if hard_labels else None,
        row_lse=lse_all,
        mean_lse=float(weights @ lse_all) / rows.total_weight,
        second_moments=None if moments is None else moments.cpu().numpy() / rows.total_weight,
    )


def linear_term(params: Params, stats: Resultants, total_weight: float) -> float:
    """(1/A) sum_i a_i sum_k q_ik s_ik = (1/A) sum_k [kappa_k mu_k . r_k + n_k b_k]."""
    kappa_mu_r = np.einsum("kd,kd->k", params.mean_directions, stats.resultants)
    return float(
        (params.concentrations * kappa_mu_r + stats.counts * params.bias).sum() / total_weight
    )


def update_parameters(
    stats: Resultants, params: Params, *, tied: bool, empty_tol: float = 1e-10
) -> tuple[Params, list[int]]:
    """The exact (mu, kappa)-step, with empty clusters re-seeded at the worst-fit rows.

    Returns the new parameters and the list of re-seeded clusters. A re-seeded
    cluster takes the direction of an unclaimed badly fitted row (lowest
    log-partition) and the median concentration of the others.
    """
    d = stats.resultants.shape[1]
    norms = np.linalg.norm(stats.resultants, axis=1)
    total = stats.counts.sum()
    empty = np.flatnonzero(stats.counts <= empty_tol * total)
    mu = params.mean_directions.copy()
    alive = np.setdiff1d(np.arange(len(norms)), empty)
    directed = alive[norms[alive] > 0]  # a zero resultant (points that cancel) keeps its mu
    mu[directed] = stats.resultants[directed] / norms[directed, None]
    if tied:
        rbar = norms[alive].sum() / stats.counts[alive].sum()
        kappa = np.full(len(norms), float(solve_kappa(d, rbar)))
    else:
        kappa = params.concentrations.copy()
        kappa[alive] = solve_kappa(d, norms[alive] / stats.counts[alive])
    if len(empty) and len(alive):
        kappa[empty] = np.median(kappa[alive])
    kappa = np.clip(kappa, KAPPA_MIN, KAPPA_MAX)
    return Params(mu, kappa, params.log_prior), empty.tolist()
