"""Dialogue context inside the text encoder's input (EmoBERTa-style).

EmoBERTa (Kim & Vossen 2021, "EmoBERTa: Speaker-Aware Emotion Recognition in Conversation with RoBERTa")
feeds the encoder the target utterance together with its neighbouring turns and their speakers. Here the
input of utterance ``i`` of a dialogue is::

    {turn i-P} … {turn i-1} SEP {turn i} SEP {turn i+1} … {turn i+F}

where every turn is rendered through the encoder's template (``"{speaker}: {text}"``), turns are joined by
one space and ``SEP`` is the marker (by default the tokenizer's own separator token, ``</s>`` for MPNet and
``[SEP]`` for BERT/MiniLM, recorded literally in ``merc_encoder.json``). The left marker is present whenever
``past > 0`` and the right one whenever ``future > 0``, even when the dialogue has no turn there (the first
utterance renders as ``" SEP {turn 0} SEP …"``), so the target is always the segment the markers enclose.

Token budget: the whole input fits ``max_tokens`` (the encoder's max length, its own special tokens
included). The target is always kept whole; neighbours are added nearest first, alternating past and
future, and a side stops at the first turn that does not fit (context is contiguous). A target longer
than the budget on its own is rendered without context (the encoder then truncates it as before).

The rendering is a pure function of the dialogue, the spec and the tokenizer: fine-tuning, the feature
cache over a corpus split and ``merc predict`` on a new conversation all call :func:`render_dialogue`,
so they see identical strings.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

from merc.encoders.template import render
from merc.errors import ConfigError

CountTokens = Callable[[list[str]], list[int]]  # token counts of strings, without special tokens
POOLS = ("mean", "target")


@dataclass(frozen=True)
class ContextSpec:
    """How many neighbouring turns an encoder input carries, the marker around the target, the budget."""
    past: int = 0
    future: int = 0
    sep: str = "</s>"  # marker string around the target (a tokenizer's separator token, or any text)
    max_tokens: int = 128  # the encoder's max input length, special tokens included
    # how the embedding is read from the window: "mean" = the encoder's own pooling over the whole input;
    # "target" = the mean over the target utterance's tokens only (between the markers), the context having
    # shaped them through attention (the window mean mixes in the neighbours' emotions)
    pool: str = "mean"

    def __post_init__(self) -> None:
        if self.past < 0 or self.future < 0:
            raise ConfigError(f"context past/future must be >= 0, got {self.past}/{self.future}")
        if (self.past or self.future) and not self.sep.strip():
            raise ConfigError("the context marker (sep) must be a non-empty string")
        if self.max_tokens < 4:
            raise ConfigError(f"context max_tokens must be >= 4, got {self.max_tokens}")
        if self.pool not in POOLS:
            raise ConfigError(f"context pool must be one of {list(POOLS)}, got {self.pool!r}")

    @property
    def enabled(self) -> bool:
        return bool(self.past or self.future)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "ContextSpec | None":
        """The spec recorded in ``merc_encoder.json`` (``None``/absent or 0/0: no context)."""
        if not d:
            return None
        spec = cls(**{k: d[k] for k in ("past", "future", "sep", "max_tokens", "pool") if k in d})
        return spec if spec.enabled else None


def tokenizer_counter(tokenizer) -> CountTokens:
    """``CountTokens`` of a Hugging Face tokenizer (no special tokens, no truncation).

    Counting a window longer than the model's max length is the point (that is how the budget is kept), so
    the tokenizer's "sequence length is longer than the specified maximum" warning is silenced here; the
    rendered inputs themselves always fit.
    """
    def count(texts: list[str]) -> list[int]:
        if not texts:
            return []
        enc = tokenizer(texts, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
        return [len(ids) for ids in enc]
    return count


def n_special_tokens(tokenizer) -> int:
    """Tokens a tokenizer adds around one sequence (2 for BERT ``[CLS] … [SEP]`` and MPNet ``<s> … </s>``)."""
    try:
        return int(tokenizer.num_special_tokens_to_add(pair=False))
    except Exception:  # not a HF tokenizer
        return 2


def default_sep(tokenizer) -> str:
    """The tokenizer's separator token (``</s>``, ``[SEP]``), else ``"||"``."""
    sep = getattr(tokenizer, "sep_token", None)
    return sep if isinstance(sep, str) and sep.strip() else "||"


def _join(left: list[str], target: str, right: list[str], spec: ContextSpec) -> str:
    parts = [*left]
    if spec.past:
        parts.append(spec.sep)
    parts.append(target)
    if spec.future:
        parts.append(spec.sep)
    parts += right
    return " ".join(parts)


def render_dialogue(utterances: Sequence[Any], template: str, spec: ContextSpec, count_tokens: CountTokens, *,
                    n_special: int = 2) -> list[str]:
    """The encoder input of every utterance of one dialogue (in order), with ``spec``'s context.

    ``count_tokens`` counts tokens without special tokens; ``n_special`` is what the encoder adds around
    the sequence. Turn lengths are counted once per dialogue; the final string is re-counted and the
    farthest turn dropped while it does not fit (tokenizers are nearly but not always additive).
    """
    turns = [render(template, u) for u in utterances]
    if not spec.enabled:
        return turns
    lens = count_tokens(turns)
    sep_len = count_tokens([spec.sep])[0]
    budget = spec.max_tokens - n_special - sep_len * (bool(spec.past) + bool(spec.future))
    out = []
    for i, target in enumerate(turns):
        used = lens[i] + 1  # +1: a joining space may itself become a token in some tokenizers; stay safe
        lo, hi = i, i  # turns lo..hi are in
        grow_past, grow_future = spec.past > 0, spec.future > 0
        if used > budget:
            grow_past = grow_future = False
        while grow_past or grow_future:
            if grow_past:
                j = lo - 1
                if j < 0 or i - j > spec.past or used + lens[j] > budget:
                    grow_past = False
                else:
                    lo, used = j, used + lens[j]
            if grow_future:
                j = hi + 1
                if j >= len(turns) or j - i > spec.future or used + lens[j] > budget:
                    grow_future = False
                else:
                    hi, used = j, used + lens[j]
        while True:
            text = _join(turns[lo:i], target, turns[i + 1:hi + 1], spec)
            if count_tokens([text])[0] + n_special <= spec.max_tokens or (lo == i and hi == i):
                break
            if i - lo >= hi - i:  # drop the farthest turn (past first on a tie)
                lo += 1
            else:
                hi -= 1
        out.append(text)
    return out


def target_mask(input_ids, attention_mask, sep_id: int, spec: ContextSpec):
    """(b, s) 0/1 mask of the target utterance's tokens in rendered inputs (``pool="target"``).

    The target lies after the left marker (or after the leading special token when ``spec.past`` is 0) and
    before the next separator — the right marker, or the tokenizer's own closing separator. A row with no
    such span (a target rendered without context because it alone fills the budget) keeps its whole
    attention mask. ``input_ids``, ``attention_mask``: (b, s) tensors, right-padded.
    """
    import torch
    b, s = input_ids.shape
    valid = attention_mask.bool()  # (b, s)
    is_sep = (input_ids == sep_id) & valid  # (b, s)
    pos = torch.arange(s).expand(b, s)  # (b, s)
    far = torch.full_like(pos, s)
    if spec.past:
        left = torch.where(is_sep, pos, far).min(1).values  # (b,) the left marker
    else:
        left = torch.zeros(b, dtype=torch.long)  # (b,) the leading <s> / [CLS]
    right = torch.where(is_sep & (pos > left[:, None]), pos, far).min(1).values  # (b,)
    mask = (pos > left[:, None]) & (pos < right[:, None]) & valid  # (b, s)
    empty = mask.sum(1) == 0  # (b,)
    mask[empty] = valid[empty]
    return mask.long()


def check_target_pooling(st, spec: ContextSpec) -> int:
    """The separator token id for ``pool="target"`` with SentenceTransformer ``st``; ConfigError when the
    marker is not the tokenizer's separator token or the model does not mean-pool its tokens."""
    tok = st.tokenizer
    sep, sep_id = getattr(tok, "sep_token", None), getattr(tok, "sep_token_id", None)
    if sep_id is None or spec.sep != sep:
        raise ConfigError(f"target pooling needs the tokenizer's separator token as the context marker "
                          f"({sep!r}); the marker is {spec.sep!r}")
    pool = list(st)[1] if len(list(st)) > 1 else None
    cfg = pool.get_config_dict() if hasattr(pool, "get_config_dict") else {}
    mode = cfg.get("pooling_mode") or ("mean" if cfg.get("pooling_mode_mean_tokens") else None)
    if mode != "mean":
        raise ConfigError(f"target pooling replaces a mean pooling; this model pools with {mode or pool!r}")
    return int(sep_id)


def pooling_target(st, spec: ContextSpec | None) -> tuple[ContextSpec, int] | None:
    """``(spec, separator id)`` when ``spec`` pools the target (checked against ``st``), else None."""
    if spec is None or spec.pool != "target":
        return None
    return spec, check_target_pooling(st, spec)


def target_embeddings(st, feats: dict, target: tuple[ContextSpec, int]):
    """SentenceTransformer ``st``'s embeddings of tokenized inputs ``feats``, pooled over the target's tokens:
    (b, dim). The transformer sees the whole window; only the pooling is restricted."""
    from merc.encoders.layer_cache import pooled
    spec, sep_id = target
    tokens = st[0](dict(feats))["token_embeddings"]  # (b, s, hidden)
    return pooled(st, tokens, target_mask(feats["input_ids"], feats["attention_mask"], sep_id, spec))
