"""The proxy-LM lab: tiny language models trained on mixtures, scored on held-out text.

Pure machinery, with no run folders or files (those are :mod:`gem_app.study`'s):

- :mod:`~gem_app.evaluate.proxy.model`: the tiny pre-LN GPT, presets ``ci`` / ``cpu`` /
  ``gpu``, the device;
- :mod:`~gem_app.evaluate.proxy.tokenizer`: byte-level BPE trained on the training text
  (raw bytes as a fallback);
- :mod:`~gem_app.evaluate.proxy.data`: held-out split, token streams, the paired data order
  with per-domain epoch caps;
- :mod:`~gem_app.evaluate.proxy.train`: training a proxy, held-out bits per byte;
- :mod:`~gem_app.evaluate.proxy.doremi`: DoReMi's excess-loss weights;
- :mod:`~gem_app.evaluate.proxy.regress`: weights -> loss regressors and targets;
- :mod:`~gem_app.evaluate.proxy.search`: RegMix top-k averaging and the exact KL-regularised
  optimum under the caps.
"""

from gem_app.evaluate.proxy.data import (
    DATA_ORDER_VERSION,
    HeldOut,
    TokenStreams,
    WindowReader,
    balanced_plan,
    build_heldout,
    build_streams,
    domain_caps,
    heldout_split,
    mixture_plan,
    window_counts,
)
from gem_app.evaluate.proxy.doremi import DoReMiResult, domain_mean_losses, doremi_weights
from gem_app.evaluate.proxy.model import (
    PRESETS,
    ProxyConfig,
    TinyGPT,
    build_model,
    proxy_config,
    resolve_device,
    torch_threads,
)
from gem_app.evaluate.proxy.regress import (
    TARGETS,
    BoostedRegressor,
    LogLinearRegressor,
    RegressorChoice,
    Target,
    parse_target,
    select_regressor,
)
from gem_app.evaluate.proxy.search import kl_objective, project_to_caps, solve_kl, topk_average
from gem_app.evaluate.proxy.tokenizer import EOS, ProxyTokenizer, train_tokenizer
from gem_app.evaluate.proxy.train import (
    ProxyCancelled,
    TrainedProxy,
    bits_per_byte,
    score_heldout,
    train_proxy,
    train_steps,
)

__all__ = [
    "DATA_ORDER_VERSION",
    "EOS",
    "PRESETS",
    "TARGETS",
    "BoostedRegressor",
    "DoReMiResult",
    "HeldOut",
    "LogLinearRegressor",
    "ProxyCancelled",
    "ProxyConfig",
    "ProxyTokenizer",
    "RegressorChoice",
    "Target",
    "TinyGPT",
    "TokenStreams",
    "TrainedProxy",
    "WindowReader",
    "balanced_plan",
    "bits_per_byte",
    "build_heldout",
    "build_model",
    "build_streams",
    "domain_mean_losses",
    "doremi_weights",
    "domain_caps",
    "heldout_split",
    "kl_objective",
    "mixture_plan",
    "parse_target",
    "project_to_caps",
    "proxy_config",
    "resolve_device",
    "score_heldout",
    "select_regressor",
    "solve_kl",
    "topk_average",
    "torch_threads",
    "train_proxy",
    "train_steps",
    "train_tokenizer",
    "window_counts",
]
