"""The proxy language model: a tiny pre-LN GPT in torch, its presets and its device.

``TinyGPT`` is the decoder-only transformer of GPT-2 with the layer norms moved before each
sub-layer (pre-LN), learned absolute positions, tied input/output embeddings and
``torch.nn.functional.scaled_dot_product_attention`` (causal). Proxies of a study differ only
in their data mixture: the same :class:`ProxyConfig` and the same ``init_seed`` give the very
same initial weights on the same device.

Presets (:data:`PRESETS`) size a proxy for a test run (``ci``), a 2-core CPU (``cpu``) or one
CUDA GPU (``gpu``); every field can be overridden (:func:`proxy_config`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "PRESETS",
    "ProxyConfig",
    "TinyGPT",
    "build_model",
    "proxy_config",
    "resolve_device",
    "torch_threads",
]


@dataclass(frozen=True)
class ProxyConfig:
    """Size and training schedule of a proxy.

    Attributes
    ----------
    vocab_size : int
        Byte-level BPE vocabulary (merges + 256 bytes + end-of-text); 0 means raw bytes (257).
    width, layers, heads : int
        Model width (divisible by ``heads``), transformer blocks, attention heads.
    context : int
        Tokens per training sequence.
    batch_size : int
        Sequences per step.
    steps : int
        Optimizer steps per proxy.
    lr : float
        Peak AdamW learning rate (linear warm-up over ``warmup`` of the steps, cosine decay to
        10% of the peak).
    warmup : float
        Share of the steps used for warm-up, in [0, 1).
    weight_decay : float
        AdamW weight decay of the matrices (not of norms, biases or embeddings).
    eval_batch_size : int
        Sequences per forward pass when scoring held-out text.
    """

    vocab_size: int = 512
    width: int = 64
    layers: int = 2
    heads: int = 4
    context: int = 128
    batch_size: int = 16
    steps: int = 400
    lr: float = 3e-3
    warmup: float = 0.05
    weight_decay: float = 0.1
    eval_batch_size: int = 64

    @property
    def tokens_per_step(self) -> int:
        """Target tokens per optimizer step, ``batch_size * context``."""
        return self.batch_size * self.context

    @property
    def budget(self) -> int:
        """Training tokens of one proxy, ``steps * batch_size * context``."""
        return self.steps * self.tokens_per_step

    def to_dict(self) -> dict:
        """The fields as a JSON-ready dict."""
        return dataclasses.asdict(self)


#: Proxy sizes: a test run, a 2-core CPU (about 0.8M tokens, 20-40 s per proxy), one CUDA GPU.
PRESETS: dict[str, ProxyConfig] = {
    "ci": ProxyConfig(
        vocab_size=320, width=32, layers=1, heads=2, context=64, batch_size=8, steps=40, lr=5e-3
    ),
    "cpu": ProxyConfig(
        vocab_size=512, width=64, layers=2, heads=4, context=128, batch_size=16, steps=400
    ),
    "gpu": ProxyConfig(
        vocab_size=8192,
        width=256,
        layers=4,
        heads=8,
        context=512,
        batch_size=64,
        steps=2000,
        lr=1.5e-3,
        eval_batch_size=128,
    ),
}


def proxy_config(preset: str = "cpu", **overrides) -> ProxyConfig:
    """A preset with some fields replaced; None values keep the preset's.

    Raises
    ------
    ValueError
        Unknown preset or field, or values out of range (named).
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}: expected one of {', '.join(PRESETS)}")
    fields = {f.name for f in dataclasses.fields(ProxyConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown proxy setting(s) {unknown}: expected some of {sorted(fields)}")
    config = dataclasses.replace(
        PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}
    )
    return check_config(config)


def check_config(config: ProxyConfig) -> ProxyConfig:
    """Validate a :class:`ProxyConfig`; return it."""
    for name in ("width", "layers", "heads", "context", "batch_size", "steps", "eval_batch_size"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if config.width % config.heads:
        raise ValueError(
            f"width {config.width} is not divisible by heads {config.heads}: each head needs "
            "width / heads channels"
        )
    if config.vocab_size != 0 and not 258 <= config.vocab_size <= 1 << 20:
        raise ValueError(
            f"vocab_size must be 0 (raw bytes) or in [258, 2^20], got {config.vocab_size}"
        )
    if not (math.isfinite(config.lr) and config.lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {config.lr}")
    if not 0 <= config.warmup < 1:
        raise ValueError(f"warmup must be in [0, 1), got {config.warmup}")
    if not (math.isfinite(config.weight_decay) and config.weight_decay >= 0):
        raise ValueError(f"weight_decay must be finite and >= 0, got {config.weight_decay}")
    return config


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"``: CUDA when torch sees it, else CPU; ``"cuda"`` without CUDA is a ValueError."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for but torch sees no CUDA device")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {device!r}: use auto, cpu or cuda") from exc


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` intra-op CPU threads (None: leave torch's setting).

    Tiny proxies gain little from threads, and on a machine shared with other jobs a
    spinning thread pool makes them several times slower (measured: docs/evaluation.md).
    """
    if threads is None:
        yield
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ----------------------------------------------------------------------------- the network
class _Attention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.proj = nn.Linear(width, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        q, k, v = self.qkv(x).split(width, dim=2)
        shape = (batch, length, self.heads, width // self.heads)
        q, k, v = (t.view(shape).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(batch, length, width))


class _Block(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = _Attention(width, heads)
        self.norm2 = nn.LayerNorm(width)
        self.up = nn.Linear(width, 4 * width, bias=False)
        self.down = nn.Linear(4 * width, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.down(F.gelu(self.up(self.norm2(x))))


class TinyGPT(nn.Module):
    """Pre-LN GPT with tied embeddings.

    Parameters
    ----------
    vocab_size, width, layers, heads, context : int
        See :class:`ProxyConfig` (``vocab_size`` is the real table size here).

    Notes
    -----
    Weights are drawn from N(0, 0.02), the residual output projections from
    N(0, 0.02 / sqrt(2 layers)) (GPT-2); norms start at identity.
    """

    def __init__(self, vocab_size: int, width: int, layers: int, heads: int, context: int):
        super().__init__()
        self.context = context
        self.embed = nn.Embedding(vocab_size, width)
        self.position = nn.Embedding(context, width)
        self.blocks = nn.ModuleList(_Block(width, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        for name, param in self.named_parameters():
            if param.dim() < 2:
                continue
            std = (
                0.02 / math.sqrt(2 * layers)
                if name.endswith(("proj.weight", "down.weight"))
                else 0.02
            )
            nn.init.normal_(param, mean=0.0, std=std)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Next-token logits.

        Parameters
        ----------
        tokens : LongTensor of shape (batch, length), length <= context

        Returns
        -------
        Tensor of shape (batch, length, vocab_size)
        """
        length = tokens.shape[1]
        if length > self.context:
            raise ValueError(f"sequence of {length} tokens exceeds the context {self.context}")
        positions = torch.arange(length, device=tokens.device)
        x = self.embed(tokens) + self.position(positions)
        for block in self.blocks:
            x = block(x)
        return F.linear(self.norm(x), self.embed.weight)


def build_model(config: ProxyConfig, vocab_size: int, *, init_seed: int, device) -> TinyGPT:
    """A freshly initialised :class:`TinyGPT`: the same ``init_seed`` gives the same weights.

    The weights are drawn on the CPU from ``torch.Generator`` seeded with ``init_seed`` (so the
    global torch RNG is left alone), then moved to ``device``.
    """
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(int(init_seed))
        model = TinyGPT(vocab_size, config.width, config.layers, config.heads, config.context)
    finally:
        torch.random.set_rng_state(state)
    return model.to(device)


def optimizer_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW parameter groups: decay on the block matrices, none on norms and embeddings."""
    decay, plain = [], []
    for name, param in model.named_parameters():
        (
            decay if param.dim() >= 2 and "embed" not in name and "position" not in name else plain
        ).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": plain, "weight_decay": 0.0},
    ]


def learning_rate(step: int, config: ProxyConfig) -> float:
    """Linear warm-up then cosine decay to 10% of the peak; ``step`` counts from 0."""
    warm = max(1, int(round(config.warmup * config.steps)))
    if step < warm:
        return config.lr * (step + 1) / warm
    progress = (step - warm) / max(1, config.steps - warm)
    return config.lr * (0.1 + 0.45 * (1.0 + math.cos(math.pi * min(1.0, progress))))
