"""Tokenizers of the proxies: a byte-level BPE trained on the study's training text, or raw bytes.

Both map any UTF-8 text losslessly to token ids (every byte is representable) and reserve one
end-of-text id that separates documents in a token stream. Loss is reported in bits per byte
of the original text, so the choice of tokenizer does not change what is compared.

The BPE is trained with Hugging Face ``tokenizers`` (ByteLevel pre-tokenizer, GPT-2 split
regex) on the *training* documents only; it is saved and read back as its JSON (no pickle).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

__all__ = ["EOS", "ProxyTokenizer", "train_tokenizer"]

#: The end-of-text token (BPE special token; id 256 for raw bytes).
EOS = "<|endoftext|>"
_BYTES = 256


class ProxyTokenizer:
    """Text -> token ids, with one end-of-text id.

    Parameters
    ----------
    bpe : tokenizers.Tokenizer or None
        A trained byte-level BPE; None means raw bytes (ids 0..255, end-of-text 256).

    Attributes
    ----------
    vocab_size : int
    eos_id : int
    kind : {"bpe", "bytes"}
    """

    def __init__(self, bpe: Tokenizer | None = None):
        self.bpe = bpe
        if bpe is None:
            self.vocab_size = _BYTES + 1
            self.eos_id = _BYTES
            self.kind = "bytes"
        else:
            self.vocab_size = int(bpe.get_vocab_size())
            eos = bpe.token_to_id(EOS)
            if eos is None:
                raise ValueError(f"the BPE tokenizer has no {EOS} token")
            self.eos_id = int(eos)
            self.kind = "bpe"

    def encode(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Token ids of each text (int32 arrays, without end-of-text)."""
        if self.bpe is None:
            return [
                np.frombuffer(t.encode("utf-8"), dtype=np.uint8).astype(np.int32) for t in texts
            ]
        return [np.asarray(e.ids, dtype=np.int32) for e in self.bpe.encode_batch(list(texts))]

    def decode(self, ids) -> str:
        """Text of token ids (end-of-text ids dropped); the inverse of :meth:`encode`."""
        ids = [int(i) for i in ids if int(i) != self.eos_id]
        if self.bpe is None:
            return bytes(ids).decode("utf-8", errors="replace")
        return self.bpe.decode(ids)

    def to_json(self) -> str:
        """A JSON string that :meth:`from_json` reads back (``{"kind": "bytes"}`` for bytes)."""
        if self.bpe is None:
            return '{"kind": "bytes"}'
        return self.bpe.to_str()

    @classmethod
    def from_json(cls, text: str) -> ProxyTokenizer:
        """Read :meth:`to_json`'s output back."""
        if text.strip() == '{"kind": "bytes"}':
            return cls(None)
        try:
            return cls(Tokenizer.from_str(text))
        except Exception as exc:  # tokenizers raises its own exception type
            raise ValueError(f"not a proxy tokenizer JSON: {exc}") from exc


def train_tokenizer(texts: Sequence[str], vocab_size: int) -> ProxyTokenizer:
    """A byte-level BPE of ``vocab_size`` ids trained on ``texts``; raw bytes for ``vocab_size=0``.

    Parameters
    ----------
    texts : sequence of str
        Training documents only (never held-out text).
    vocab_size : int
        0 (raw bytes) or at least 258 (256 bytes, end-of-text, one merge). When the text is too
        small to learn that many merges, the vocabulary is smaller.

    Returns
    -------
    ProxyTokenizer
    """
    if vocab_size == 0:
        return ProxyTokenizer(None)
    if vocab_size < _BYTES + 2:
        raise ValueError(f"vocab_size must be 0 (raw bytes) or >= 258, got {vocab_size}")
    if not any(texts):
        raise ValueError("no training text to learn a tokenizer from")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=int(vocab_size),
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(list(texts), trainer)
    return ProxyTokenizer(bpe)
