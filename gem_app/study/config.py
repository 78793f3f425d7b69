"""The settings of a study and the part of them that fixes what a proxy is.

:class:`StudyConfig` holds every option of ``gem study``. Its *identity*
(:meth:`StudyConfig.identity`: the proxy size and schedule, the seeds, the domains, the split,
the epoch cap) decides what a finished proxy means; a study folder keeps it, and a rerun with a
different identity is refused, while the method, the target, the number of candidates and the
search settings may change between runs of the same folder (finished proxies are reused).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from gem_app.evaluate.proxy import DATA_ORDER_VERSION, TARGETS, ProxyConfig, proxy_config

__all__ = ["DOMAIN_SOURCES", "METHODS", "DEFAULT_CANDIDATES", "StudyConfig"]

#: Where the domains of a study come from.
DOMAIN_SOURCES = ("clusters", "taxonomy", "labels")
#: How the recommended mixture is found.
METHODS = ("regmix", "doremi")
#: RegMix candidate proxies per preset when ``n_proxies`` is not given.
DEFAULT_CANDIDATES = {"ci": 4, "cpu": 32, "gpu": 64}
#: Extra seeds of the noise anchors per preset when ``noise_seeds`` is not given.
DEFAULT_NOISE_SEEDS = {"ci": 1, "cpu": 2, "gpu": 2}


@dataclass(frozen=True)
class StudyConfig:
    """Options of a study.

    Attributes
    ----------
    preset : {"ci", "cpu", "gpu"}
        Proxy size (:data:`gem_app.evaluate.proxy.PRESETS`).
    steps : int, optional
        Training steps per proxy (the preset's by default).
    proxy : dict
        Further :class:`~gem_app.evaluate.proxy.ProxyConfig` overrides (width, layers, ...).
    seed : int
        Initialisation and data-order seed of every proxy; the noise anchors use
        ``seed + 1, ..., seed + noise_seeds``.
    n_proxies : int, optional
        RegMix candidate proxies (anchors come on top); the preset's default when None.
    method : {"regmix", "doremi"}
    target : str
        ``mean`` (over domains), ``worst``, ``overall`` or ``domain:ID``.
    domains : {"clusters", "taxonomy", "labels"}
    device : str
        ``auto`` (CUDA when torch sees it), ``cpu`` or ``cuda``.
    max_epochs : float
        Per-domain epoch cap of every mixture.
    kl_penalty : float
        ``lambda`` of the exact search (bits per byte per nat of KL to the natural mixture).
    heldout_share, heldout_max_docs, min_doc_bytes
        Held-out split: this share of every cluster's documents with at least
        ``min_doc_bytes`` bytes, at most ``heldout_max_docs`` per cluster.
    noise_seeds : int, optional
        Extra seeds for the natural, uniform and recommended mixtures (1-2).
    temperatures : tuple of float
        The GEM temperature sweep anchors.
    doremi_rounds : int
        1-3.
    top_k, search_draws : int
        RegMix search: average the ``top_k`` best of ``search_draws`` candidates.
    threads : int, optional
        CPU threads of torch while the study runs (default: 1 for ``ci``, torch's otherwise).
    """

    preset: str = "cpu"
    steps: int | None = None
    proxy: dict = field(default_factory=dict)
    seed: int = 0
    n_proxies: int | None = None
    method: str = "regmix"
    target: str = "mean"
    domains: str = "clusters"
    device: str = "auto"
    max_epochs: float = 4.0
    kl_penalty: float = 0.05
    heldout_share: float = 0.1
    heldout_max_docs: int = 128
    min_doc_bytes: int = 64
    noise_seeds: int | None = None
    temperatures: tuple = (0.5, 2.0, 4.0)
    doremi_rounds: int = 1
    top_k: int = 128
    search_draws: int = 20000
    threads: int | None = None

    def __post_init__(self):
        self.proxy_config()  # validates preset, steps and the overrides
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")
        if self.n_proxies is not None:
            _positive_int(self.n_proxies, "the number of proxies (--proxies)")
        if self.method not in METHODS:
            raise ValueError(
                f"unknown method {self.method!r}: expected one of {', '.join(METHODS)}"
            )
        kind = str(self.target).split(":", 1)[0]
        if kind not in TARGETS or (kind == "domain") != (":" in str(self.target)):
            raise ValueError(
                f"unknown target {self.target!r}: expected mean, worst, overall or domain:ID"
            )
        if self.domains not in DOMAIN_SOURCES:
            raise ValueError(
                f"unknown domains {self.domains!r}: expected one of {', '.join(DOMAIN_SOURCES)}"
            )
        for name in ("max_epochs", "heldout_share"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if not self.heldout_share < 1:
            raise ValueError(f"heldout_share must be < 1, got {self.heldout_share}")
        if not (math.isfinite(self.kl_penalty) and self.kl_penalty >= 0):
            raise ValueError(f"kl_penalty must be a finite number >= 0, got {self.kl_penalty}")
        _positive_int(self.heldout_max_docs, "heldout_max_docs")
        _positive_int(self.min_doc_bytes, "min_doc_bytes")
        if self.noise_seeds is not None and self.noise_seeds not in (0, 1, 2):
            raise ValueError(f"noise_seeds must be 0, 1 or 2, got {self.noise_seeds!r}")
        if self.doremi_rounds not in (1, 2, 3):
            raise ValueError(f"doremi_rounds must be 1, 2 or 3, got {self.doremi_rounds!r}")
        if any(not (math.isfinite(t) and t > 0) for t in self.temperatures):
            raise ValueError(f"temperatures must be finite numbers > 0, got {self.temperatures}")
        if self.threads is not None:
            _positive_int(self.threads, "threads")
        _positive_int(self.top_k, "top_k")
        _positive_int(self.search_draws, "search_draws")

    def proxy_config(self) -> ProxyConfig:
        """The proxy size and schedule: the preset with ``steps`` and ``proxy`` applied."""
        return proxy_config(self.preset, steps=self.steps, **dict(self.proxy))

    @property
    def candidates(self) -> int:
        """RegMix candidate proxies."""
        return int(
            self.n_proxies if self.n_proxies is not None else DEFAULT_CANDIDATES[self.preset]
        )

    @property
    def torch_threads(self) -> int | None:
        """CPU threads for torch (None: torch's own setting)."""
        if self.threads is not None:
            return int(self.threads)
        return 1 if self.preset == "ci" else None

    @property
    def seeds(self) -> list[int]:
        """The main seed, then the noise seeds."""
        extra = (
            self.noise_seeds if self.noise_seeds is not None else DEFAULT_NOISE_SEEDS[self.preset]
        )
        return [int(self.seed) + i for i in range(int(extra) + 1)]

    def identity(self) -> dict:
        """What fixes the meaning of a finished proxy (JSON-ready)."""
        return {
            "proxy": self.proxy_config().to_dict(),
            "data_order": DATA_ORDER_VERSION,
            "seed": int(self.seed),
            "domains": self.domains,
            "max_epochs": float(self.max_epochs),
            "heldout_share": float(self.heldout_share),
            "heldout_max_docs": int(self.heldout_max_docs),
            "min_doc_bytes": int(self.min_doc_bytes),
        }

    def to_dict(self) -> dict:
        """Every option, JSON-ready."""
        out = dataclasses.asdict(self)
        out["temperatures"] = list(self.temperatures)
        return out


def _positive_int(value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
