"""DoReMi: domain weights from a proxy trained against a reference (Xie et al., 2023).

A reference proxy is trained on the natural mixture. A fresh proxy (same size, same
initialisation seed) then trains on batches that hold the same number of sequences of every
domain; at every step, with ``l_k`` its mean token loss on domain ``k`` and ``r_k`` the
reference's on the same tokens,

    excess_k = max(0, l_k - r_k)
    w <- (1 - eps) softmax(log w + eta * excess) + eps / K          (doremi_update)
    loss = sum_k w_k l_k                                             (the proxy's objective)

with ``eta = 1`` and ``eps = 1e-3``; every weight stays >= eps / K. The result is the average
of ``w`` over the steps. Batches that contain every domain matter: without them a step sees
no loss for some domains and the weights collapse (DoReMi issue #5).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from gem_app.evaluate.proxy.data import TokenStreams, WindowReader, balanced_plan
from gem_app.evaluate.proxy.model import ProxyConfig, TinyGPT, build_model
from gem_app.evaluate.proxy.train import Progress, train_steps
from gem_app.mixing.strategies import doremi_update

__all__ = ["DoReMiResult", "doremi_weights", "domain_mean_losses"]


@dataclass
class DoReMiResult:
    """Weights found by one DoReMi run.

    Attributes
    ----------
    weights : ndarray of shape (K,)
        The average of the per-step weights (the DoReMi output).
    history : ndarray of shape (steps, K)
        Weights after every step.
    excess : ndarray of shape (steps, K)
        Clipped excess loss of every domain at every step (nats per token).
    """

    weights: np.ndarray
    history: np.ndarray
    excess: np.ndarray


def domain_mean_losses(token_loss: torch.Tensor, row_domain: torch.Tensor, n_domains: int):
    """Mean token loss per domain.

    Parameters
    ----------
    token_loss : Tensor of shape (B, T)
    row_domain : LongTensor of shape (B,)
    n_domains : int

    Returns
    -------
    Tensor of shape (n_domains,)
        0 for a domain without rows (differentiable in ``token_loss``).
    """
    per_row = token_loss.mean(dim=1)
    total = torch.zeros(n_domains, dtype=per_row.dtype, device=per_row.device)
    total = total.index_add(0, row_domain, per_row)
    count = torch.bincount(row_domain, minlength=n_domains).to(per_row.dtype)
    return total / count.clamp(min=1)


def doremi_weights(
    config: ProxyConfig,
    streams: TokenStreams,
    reference: TinyGPT,
    *,
    init_seed: int,
    data_seed: int,
    device,
    step_size: float = 1.0,
    smoothing: float = 1e-3,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> DoReMiResult:
    """Train a DoReMi proxy against ``reference``; return its averaged domain weights.

    Parameters
    ----------
    config : ProxyConfig
        ``batch_size // K`` sequences of every domain per step (at least 1).
    streams : TokenStreams
        Every domain must have training tokens.
    reference : TinyGPT
        The reference proxy (trained on the natural mixture); left unchanged.
    init_seed, data_seed : int
    device : torch.device
    step_size, smoothing : float
        DoReMi's ``eta`` and ``eps``.
    """
    device = torch.device(device)
    n_domains = len(streams)
    empty = np.flatnonzero(streams.lengths == 0)
    if empty.size:
        raise ValueError(f"DoReMi needs training text in every domain; domain {empty[0]} has none")
    per_domain = max(1, config.batch_size // n_domains)
    size = per_domain * n_domains
    domain, window = balanced_plan(
        streams.lengths,
        context=config.context,
        rows_per_domain=per_domain,
        steps=config.steps,
        seed=data_seed,
    )
    reader = WindowReader(streams, config.context, device)
    model = build_model(config, streams.vocab_size, init_seed=init_seed, device=device)
    reference = reference.to(device).eval()
    weights = np.full(n_domains, 1.0 / n_domains)
    history = np.zeros((config.steps, n_domains))
    excess_log = np.zeros((config.steps, n_domains))
    step_domains = torch.from_numpy(domain[:size]).to(device)
    references: dict[int, torch.Tensor] = {}

    def batches(step: int):
        rows = slice(step * size, (step + 1) * size)
        inputs, targets = reader.read(domain[rows], window[rows])
        with torch.no_grad():
            logits = reference(inputs).float()
            token_loss = F.cross_entropy(
                logits.flatten(0, 1), targets.flatten(), reduction="none"
            ).view(targets.shape)
            references[step] = domain_mean_losses(token_loss, step_domains, n_domains)
        return inputs, targets

    def loss_fn(step: int, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        nonlocal weights
        token_loss = F.cross_entropy(
            logits.flatten(0, 1), targets.flatten(), reduction="none"
        ).view(targets.shape)
        losses = domain_mean_losses(token_loss, step_domains, n_domains)
        excess = (losses.detach() - references.pop(step)).clamp(min=0).cpu().numpy()
        weights = doremi_update(weights, excess, step_size=step_size, smoothing=smoothing)
        history[step] = weights
        excess_log[step] = excess
        return (torch.as_tensor(weights, dtype=losses.dtype, device=device) * losses).sum()

    train_steps(model, config, batches, loss_fn=loss_fn, progress=progress, should_stop=should_stop)
    return DoReMiResult(weights=history.mean(axis=0), history=history, excess=excess_log)
