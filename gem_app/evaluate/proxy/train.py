"""Training a proxy on a mixture and scoring held-out text in bits per byte.

:func:`train_proxy` trains a fresh :class:`~gem_app.evaluate.proxy.model.TinyGPT` (fixed
``init_seed``) on the sequences of :func:`~gem_app.evaluate.proxy.data.mixture_plan` (fixed
data-order seed) with AdamW, warm-up + cosine learning rate and gradient clipping at 1;
bfloat16 autocast on CUDA, float32 on CPU. :func:`score_heldout` returns the loss of every
held-out document in nats; :func:`bits_per_byte` pools them by group:

    bpb_g = sum_{i in g} nats_i / (ln 2 * sum_{i in g} bytes_i)

so the overall bits per byte of the held-out text is the byte-weighted mean of the groups'.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from gem_app.evaluate.proxy.data import (
    HeldOut,
    TokenStreams,
    WindowReader,
    mixture_plan,
    window_counts,
)
from gem_app.evaluate.proxy.model import (
    ProxyConfig,
    TinyGPT,
    build_model,
    learning_rate,
    optimizer_groups,
)

__all__ = [
    "ProxyCancelled",
    "TrainedProxy",
    "train_proxy",
    "train_steps",
    "score_heldout",
    "bits_per_byte",
]

Progress = Callable[[int, int], None]


class ProxyCancelled(Exception):
    """Training stopped because ``should_stop()`` returned True."""


@dataclass
class TrainedProxy:
    """A trained proxy and what its training did.

    Attributes
    ----------
    model : TinyGPT
    seconds : float
        Wall time of the training steps (not the scoring).
    tokens_per_second : float
        Target tokens per second of training.
    epochs : ndarray of shape (K,)
        Passes over each domain's stream that the proxy made.
    final_loss : float
        Mean training loss (nats per token) of the last 10% of the steps.
    """

    model: TinyGPT
    seconds: float
    tokens_per_second: float
    epochs: np.ndarray
    final_loss: float


def _autocast(device: torch.device):
    return torch.autocast(
        device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"
    )


def train_steps(
    model: TinyGPT,
    config: ProxyConfig,
    batches: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
    *,
    loss_fn: Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[float]:
    """The optimisation loop shared by every proxy; returns the loss of every step.

    Parameters
    ----------
    model : TinyGPT
    config : ProxyConfig
    batches : callable(step) -> (inputs, targets)
        LongTensors of shape (B, context) on the model's device.
    loss_fn : callable(step, logits, targets) -> scalar tensor, optional
        Default: mean cross-entropy.
    progress : callable(done, total), optional
    should_stop : callable() -> bool, optional
        Checked before every step; True raises :class:`ProxyCancelled`.
    """
    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW(
        optimizer_groups(model, config.weight_decay), lr=config.lr, betas=(0.9, 0.95)
    )
    model.train()
    losses = []
    for step in range(config.steps):
        if should_stop is not None and should_stop():
            raise ProxyCancelled(f"cancelled at step {step} of {config.steps}")
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, config)
        inputs, targets = batches(step)
        with _autocast(device):
            logits = model(inputs)
        if loss_fn is None:
            loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
        else:
            loss = loss_fn(step, logits.float(), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(float(loss.detach()))
        if not math.isfinite(losses[-1]):
            raise ValueError(f"the proxy's training loss diverged at step {step}: lower the lr")
        if progress is not None:
            progress(step + 1, config.steps)
    return losses


def train_proxy(
    config: ProxyConfig,
    streams: TokenStreams,
    weights,
    *,
    init_seed: int,
    data_seed: int,
    max_epochs: float | None,
    device,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainedProxy:
    """Train one proxy on the mixture ``weights`` over the domains of ``streams``.

    Parameters
    ----------
    config : ProxyConfig
    streams : TokenStreams
    weights : array-like of shape (K,)
    init_seed, data_seed : int
        Initialisation and data-order seeds; equal seeds pair proxies.
    max_epochs : float or None
        Per-domain epoch cap of the data order.
    device : torch.device
    """
    device = torch.device(device)
    domain, window = mixture_plan(
        streams.lengths,
        weights,
        context=config.context,
        batch_size=config.batch_size,
        steps=config.steps,
        max_epochs=max_epochs,
        seed=data_seed,
    )
    reader = WindowReader(streams, config.context, device)
    model = build_model(config, streams.vocab_size, init_seed=init_seed, device=device)
    size = config.batch_size

    def batches(step: int):
        rows = slice(step * size, (step + 1) * size)
        return reader.read(domain[rows], window[rows])

    start = time.perf_counter()
    losses = train_steps(model, config, batches, progress=progress, should_stop=should_stop)
    seconds = time.perf_counter() - start
    windows = np.bincount(domain, minlength=len(streams)).astype(np.float64)
    n_windows = window_counts(streams.lengths, config.context)
    epochs = windows / np.maximum(n_windows, 1)
    tail = max(1, len(losses) // 10)
    return TrainedProxy(
        model=model,
        seconds=seconds,
        tokens_per_second=config.budget / max(seconds, 1e-9),
        epochs=epochs,
        final_loss=float(np.mean(losses[-tail:])),
    )


@torch.no_grad()
def score_heldout(model: TinyGPT, heldout: HeldOut, *, batch_size: int = 64) -> np.ndarray:
    """Loss of every held-out document in nats (its tokens only, end-of-text excluded).

    The stream is read in windows of ``context + 1`` tokens with stride ``context``, so every
    token after the first is predicted once, with up to ``context - 1`` tokens of context.

    Returns
    -------
    ndarray of shape (H,), float64
    """
    device = next(model.parameters()).device
    context = model.context
    tokens = heldout.tokens.astype(np.int64)
    owner = heldout.owner
    n_windows = max(1, -(-(tokens.size - 1) // context))
    pad = n_windows * context + 1 - tokens.size
    tokens = np.concatenate([tokens, np.zeros(pad, dtype=np.int64)])
    owner = np.concatenate([owner, np.full(pad, -1, dtype=np.int64)])
    index = np.arange(n_windows)[:, None] * context + np.arange(context + 1)[None, :]
    nats = np.zeros(len(heldout), dtype=np.float64)
    was_training = model.training
    model.eval()
    try:
        for first in range(0, n_windows, batch_size):
            rows = index[first : first + batch_size]
            seq = torch.from_numpy(tokens[rows]).to(device)
            with _autocast(device):
                logits = model(seq[:, :-1])
            loss = F.cross_entropy(
                logits.float().flatten(0, 1), seq[:, 1:].flatten(), reduction="none"
            )
            who = owner[rows[:, 1:]].ravel()
            keep = who >= 0
            nats += np.bincount(
                who[keep],
                weights=loss.cpu().numpy().astype(np.float64)[keep],
                minlength=nats.size,
            )
    finally:
        model.train(was_training)
    return nats


def bits_per_byte(nats, doc_bytes, groups=None, n_groups: int | None = None) -> np.ndarray:
    """Pooled bits per byte of documents grouped by ``groups``.

    Parameters
    ----------
    nats : array-like of shape (H,)
        Loss of each document in nats.
    doc_bytes : array-like of shape (H,)
        UTF-8 bytes of each document.
    groups : array-like of int, shape (H,), optional
        Group of each document (``0..n_groups-1``); all documents in one group when None.
    n_groups : int, optional

    Returns
    -------
    ndarray of shape (n_groups,)
        ``NaN`` for a group without documents.
    """
    nats = np.asarray(nats, dtype=np.float64)
    doc_bytes = np.asarray(doc_bytes, dtype=np.float64)
    if nats.shape != doc_bytes.shape:
        raise ValueError(f"nats {nats.shape} and doc_bytes {doc_bytes.shape} differ in shape")
    if groups is None:
        groups = np.zeros(nats.size, dtype=np.int64)
        n_groups = 1
    groups = np.asarray(groups, dtype=np.int64)
    n_groups = int(groups.max()) + 1 if n_groups is None else int(n_groups)
    total = np.bincount(groups, weights=nats, minlength=n_groups)
    size = np.bincount(groups, weights=doc_bytes, minlength=n_groups)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(size > 0, total / (math.log(2.0) * size), np.nan)
