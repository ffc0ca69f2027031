"""Stage 1, emotion-tuned: fine-tune a sentence-transformers text encoder on a corpus's utterance labels.

The frozen sentence encoders (``mpnet``, ``minilm``) were trained for semantic similarity, not emotion.
This module fine-tunes one end to end as an utterance classifier — the encoder's sentence embedding,
dropout, one linear layer, cross-entropy — and saves the encoder as an ordinary sentence-transformers
folder that every other part of merc takes as ``--text-encoder PATH``:

    merc encoder finetune --dataset meld --data-dir ../shared/data/meld --base mpnet --out encoders/mpnet-meld
    merc train ... --text-encoder encoders/mpnet-meld

Each utterance is rendered through a template (default ``"{speaker}: {text}"``, so the encoder learns
speaker priors); the template travels with the folder (``merc_encoder.json``) and the feature store and
``merc predict`` apply it.

Dialogue context (EmoBERTa-style, Kim & Vossen 2021): with ``context_past``/``context_future`` > 0 each
input also carries up to that many neighbouring turns with their speakers, the target between two
separator markers, fitted to ``max_length`` tokens with the target whole (:mod:`merc.encoders.context`).
The spec travels with the folder too, so every encoding of a corpus split or a new conversation renders
the same context. Defaults 0/0: the utterance alone, as before.

Practical on CPU: ``train_layers=k`` freezes the embeddings and the lower ``L - k`` layers, runs them once
over every train/dev input into a resumable on-disk cache (:mod:`merc.encoders.layer_cache`), and trains
only the upper ``k`` layers (+ pooling + head) from it. Default ``None``: all layers, end to end, as before.

Distillation (Hinton et al. 2015): with ``teacher`` set to another tuned folder, the loss becomes
``(1 - α) · CE + α · T² · KL(teacher ‖ student)`` over the teacher's logits for every training utterance
(computed once, as the teacher renders its inputs; :mod:`merc.encoders.distill`): e.g. a MiniLM student of
the context-tuned MPNet.

Honest selection: the checkpoint kept is the epoch with the best **dev** weighted F1; test is scored once,
after training, with that checkpoint. The loop is the shared one (:mod:`merc.loop`): AdamW with the
decay/no-decay groups of :mod:`merc.optim` (for the encoder at ``lr`` and the head at ``head_lr``;
biases and LayerNorm weights are not decayed), linear warm-up then linear decay, clipping at norm 1. A run is
resumable: after every epoch and every ``checkpoint_minutes`` the model, the optimizer, the schedule and the
position in the epoch are written atomically to ``<out>/.checkpoint.pt``; a rerun with the same config
continues from there (the batch order is a function of seed and epoch).

Cost on the 2-core CPU machine: see benchmarks/results/finetune/finetune_mpnet-meld.md.
"""
from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from merc.data.schema import Corpus, Utterance
from merc.encoders.classifier import HEAD_FILE, EncoderClassifier, folder_classifier
from merc.encoders.context import (
    POOLS,
    ContextSpec,
    default_sep,
    n_special_tokens,
    pooling_target,
    render_dialogue,
    target_mask,
    tokenizer_counter,
)
from merc.encoders.template import DEFAULT_TEMPLATE, META_FILE, render
from merc.errors import ConfigError, InputError, OutputExistsError
from merc.io import atomic_write_bytes, write_json
from merc.loop import Callback, LoopConfig, json_default, run_loop
from merc.objectives.class_weights import class_weights
from merc.objectives.distill import distillation_loss
from merc.optim import param_groups

log = logging.getLogger(__name__)
CHECKPOINT = ".checkpoint.pt"


# helpers


def length_grouped_batches(lengths: Sequence[int], batch_size: int, *, seed: int, pool: int = 50) -> list[list[int]]:
    """Shuffled batches of indices whose lengths are similar (less padding, same randomness per seed).

    Indices are shuffled, cut into pools of ``pool * batch_size``, sorted by length inside a pool,
    cut into batches, and the batches shuffled: a function of ``seed`` only, so a resumed epoch
    replays the same order.
    """
    rng = random.Random(seed)
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    batches: list[list[int]] = []
    span = pool * batch_size
    for s in range(0, len(idx), span):
        chunk = sorted(idx[s:s + span], key=lambda i: lengths[i])
        batches += [chunk[k:k + batch_size] for k in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def _labelled(corpus: Corpus, split: str, template: str, context: tuple[ContextSpec, Any] | None = None
              ) -> tuple[list[str], np.ndarray, list[str]]:
    """Rendered texts, label indices and utterance ids of the labelled utterances of ``split``.

    ``context``: ``(spec, tokenizer)`` renders every utterance with its dialogue neighbours (labelled or not)."""
    index = {lab: i for i, lab in enumerate(corpus.labels)}
    if context is None:
        rendered = [render(template, u) for u in corpus.utterances(split)]
    else:
        spec, tok = context
        count, n_special = tokenizer_counter(tok), n_special_tokens(tok)
        rendered = [t for c in corpus[split] for t in render_dialogue(list(c), template, spec, count,
                                                                      n_special=n_special)]
    texts, ys, ids = [], [], []
    for u, text in zip(corpus.utterances(split), rendered):
        if u.emotion is None:
            continue
        if u.emotion not in index:
            raise InputError(f"{corpus.name}/{split}: utterance {u.utterance_id} has label {u.emotion!r}, "
                             f"not one of {corpus.labels}")
        texts.append(text)
        ys.append(index[u.emotion])
        ids.append(u.utterance_id)
    return texts, np.asarray(ys, dtype=np.int64), ids

# The fast route for a user's own corpus (issue 15): MiniLM (6 layers, 384-d), two past turns and one future
# turn in the input, the embedding pooled over the target's tokens, only the top 2 layers trained from cached
# lower-layer states, short inputs, 3 epochs. On MELD (ctx_finetune/ctx_finetune_minilm-ctx*.md) target pooling took the
# best dev weighted F1 from 46.55 (mean over the window) to 54.48.
#   merc encoder finetune --dataset jsonl --data-dir DIR --recipe minilm-fast --out encoders/mine
# Flags given explicitly override the recipe's values. Cost: benchmarks/results/ctx_finetune/*.md.
RECIPES: dict[str, dict[str, Any]] = {
    "minilm-fast": {"base": "minilm", "context_past": 2, "context_future": 1, "train_layers": 2, "max_length": 96,
                    "epochs": 3, "batch_size": 32, "lr": 1e-4, "head_lr": 1e-3, "pooling": "target"},
}

# classes


@dataclass
class FinetuneConfig:
    base: str = "mpnet"  # registered name, local sentence-transformers folder, or hub name
    template: str = DEFAULT_TEMPLATE
    epochs: int = 3
    lr: float = 2e-5  # encoder
    head_lr: float = 1e-3  # the linear classifier (starts from zero knowledge)
    weight_decay: float = 0.01
    warmup: float = 0.1  # fraction of all steps, linear warm-up then linear decay
    batch_size: int = 16
    max_length: int = 64  # tokens; MELD "speaker: text" has mean 16, 95th percentile 32
    dropout: float = 0.1
    class_weights: str = "none"  # "none" | "balanced" | "sqrt" | "effective" (merc.objectives.class_weights)
    cb_beta: float = 0.999  # β of the effective-number weights (class_weights="effective")
    seed: int = 0
    checkpoint_minutes: float = 10.0
    max_train: int | None = None  # cap on training utterances (smoke tests)
    # added for issue 15; the defaults reproduce the behaviour (and resume the checkpoints) of earlier versions
    context_past: int = 0  # neighbouring turns before the target in the input (EmoBERTa-style)
    context_future: int = 0  # … and after it
    context_marker: str = ""  # marker around the target; "": the tokenizer's separator token (</s>, [SEP])
    train_layers: int | None = None  # fine-tune only the top k transformer layers from cached states; None: all
    layer_cache_dtype: str = "float16"  # storage of the cached lower-layer states
    pooling: str = "mean"  # with context: "mean" over the whole input, or "target" (the target's tokens only)
    teacher: str | None = None  # a tuned folder whose own classifier the student distils (merc.encoders.distill)
    distill_alpha: float = 0.9  # loss = (1 - α) · CE + α · T² · KL(teacher ‖ student); 0.9: the dev-best of
    # 0.5 / 0.9 / 1.0 for a MiniLM student of the context MPNet on MELD (distill/ctx_finetune_minilm-student-cb*.md)
    distill_temperature: float = 2.0  # T

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.max_length < 4:
            raise ConfigError(f"FinetuneConfig: epochs, batch_size must be >= 1 and max_length >= 4, got {self}")
        if self.context_past < 0 or self.context_future < 0:
            raise ConfigError(f"context_past/context_future must be >= 0, got {self.context_past}/"
                              f"{self.context_future}")
        if self.train_layers is not None and self.train_layers < 1:
            raise ConfigError(f"train_layers must be >= 1 (or None for all layers), got {self.train_layers}")
        if self.layer_cache_dtype not in ("float16", "float32"):
            raise ConfigError(f"layer_cache_dtype must be float16 or float32, got {self.layer_cache_dtype!r}")
        if self.pooling not in POOLS:
            raise ConfigError(f"pooling must be one of {list(POOLS)}, got {self.pooling!r}")
        if self.pooling == "target" and not (self.context_past or self.context_future):
            raise ConfigError("pooling 'target' reads the target out of a context window: set context_past "
                              "and/or context_future")
        if not 0.0 <= self.distill_alpha <= 1.0 or self.distill_temperature <= 0:
            raise ConfigError(f"distill_alpha must be in [0, 1] and distill_temperature > 0, got "
                              f"{self.distill_alpha} / {self.distill_temperature}")
        class_weights(np.ones(2), self.class_weights, beta=self.cb_beta)  # fails early on a bad scheme or beta
        render(self.template, Utterance("u", "Speaker", "text"))  # fails early on a bad template

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FinetuneConfig":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


@dataclass
class FinetuneResult:
    out_dir: Path
    best_epoch: int
    dev: dict[str, Any]
    test: dict[str, Any] | None
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class _Cached:
    """Training from cached lower-layer states: the trainable upper layers, train/dev states, cost."""
    params: list
    train: Any  # LayerStates of the training inputs
    dev: Any  # LayerStates of the dev inputs
    n_frozen: int
    seconds: float  # building (or, when cached, loading) the states in this process
    train_target: list | None = None  # pool="target": per input, (tokens,) 0/1 flags of the target's tokens
    dev_target: list | None = None

    @staticmethod
    def _pool_mask(flags: list | None, idx: Sequence[int], mask):
        """The (b, s) pooling mask of a batch: the target flags when pooling the target, else ``mask``."""
        if flags is None:
            return mask
        import torch
        out = torch.zeros_like(mask)
        for r, i in enumerate(idx):
            f = flags[i]
            out[r, :len(f)] = torch.from_numpy(f)
        return out

    def build_seconds(self, key: str = "seconds") -> float | None:
        """Seconds (wall or ``"cpu_seconds"``) the first build of the train and dev caches took (meta.json)."""
        from merc.encoders.layer_cache import layer_cache_seconds
        parts = [layer_cache_seconds(self.train.folder, key), layer_cache_seconds(self.dev.folder, key)]
        return None if None in parts else round(sum(parts), 1)

    def logits(self, model: EncoderClassifier, idx: Sequence[int]):
        from merc.encoders.layer_cache import pooled, transformer_of, upper_forward
        h, mask = self.train.batch(idx)  # (b, s, hidden), (b, s)
        top = upper_forward(transformer_of(model.st), h, mask, self.n_frozen)  # (b, s, hidden)
        pool = self._pool_mask(self.train_target, idx, mask)  # (b, s)
        return model.head(model.drop(pooled(model.st, top, pool)))  # (b, n_classes)

    def predict_dev(self, model: EncoderClassifier, batch_size: int = 64) -> np.ndarray:
        import torch

        from merc.encoders.layer_cache import pooled, transformer_of, upper_forward
        model.train(False)
        hf = transformer_of(model.st)
        order = np.argsort(self.dev.lengths, kind="stable")
        out = np.empty(len(self.dev), dtype=np.int64)
        with torch.inference_mode():
            for s in range(0, len(order), batch_size):
                idx = order[s:s + batch_size]
                h, mask = self.dev.batch(idx)
                emb = pooled(model.st, upper_forward(hf, h, mask, self.n_frozen),
                             self._pool_mask(self.dev_target, idx, mask))
                out[idx] = model.head(emb).argmax(-1).cpu().numpy()
        return out


def _target_flags(st, texts: list[str], target: tuple[ContextSpec, int], lengths) -> list[np.ndarray]:
    """Per input, the 0/1 flags of its target tokens (tokenized as ``st`` does; ``lengths`` must agree)."""
    from merc.encoders.layer_cache import tokenize
    spec, sep_id = target
    out: list[np.ndarray] = []
    for s in range(0, len(texts), 512):
        feats = tokenize(st, texts[s:s + 512])
        mask = target_mask(feats["input_ids"], feats["attention_mask"], sep_id, spec).numpy()  # (chunk, s)
        n = feats["attention_mask"].sum(1).numpy()
        out += [mask[r, :int(n[r])].astype(np.int64) for r in range(len(n))]
    if [len(f) for f in out] != [int(n) for n in lengths]:
        raise RuntimeError("target flags and cached layer states disagree on token counts")
    return out


def _layer_cache(st, base_enc, config: FinetuneConfig, tr_texts: list[str], dev_texts: list[str], *,
                 progress: bool, target: tuple[ContextSpec, int] | None = None) -> _Cached | None:
    """With ``config.train_layers = k`` below the model's depth: freeze the lower layers, cache their states."""
    if config.train_layers is None:
        return None
    from merc.encoders.layer_cache import build_layer_states, freeze_lower, num_layers
    n_layers = num_layers(st)  # ConfigError for an unsupported architecture
    if config.train_layers >= n_layers:
        log.info("train_layers=%d >= the model's %d layers: fine-tuning all of them end to end",
                 config.train_layers, n_layers)
        return None
    n_frozen = n_layers - config.train_layers
    t0 = time.perf_counter()
    kw = {"fingerprint": base_enc.fingerprint, "label": base_enc.name, "dtype": config.layer_cache_dtype,
          "progress": progress}
    train = build_layer_states(st, tr_texts, n_frozen, **kw)
    dev = build_layer_states(st, dev_texts, n_frozen, **kw)
    params = freeze_lower(st, n_frozen)
    cached = _Cached(params, train, dev, n_frozen, time.perf_counter() - t0)
    if target is not None:
        cached.train_target = _target_flags(st, tr_texts, target, train.lengths)
        cached.dev_target = _target_flags(st, dev_texts, target, dev.lengths)
    return cached


def _load_base(base: str):
    """The ``SentenceTransformer`` behind ``base`` (fresh weights, trainable) and a label for provenance."""
    from merc.encoders.base import get_encoder
    from merc.encoders.text import SentenceTransformerEncoder
    enc = get_encoder(base, "text")
    if not isinstance(enc, SentenceTransformerEncoder):
        raise ConfigError(f"text encoder {base!r} is a {type(enc).__name__}; fine-tuning needs a "
                         "sentence-transformers model")
    return enc.model, enc


class _FinetuneTask:
    """Fine-tuning for :func:`merc.loop.run_loop`: length-grouped batches of training inputs (a function
    of seed and epoch, so an interrupted epoch replays), weighted cross-entropy (+ distillation), dev weighted F1;
    the best epoch is written to ``out`` as a sentence-transformers folder with the classifier head."""

    def __init__(self, clf: EncoderClassifier, cached: _Cached | None, tr_texts: list[str], tr_y: np.ndarray,
                 dev_texts: list[str], dev_y: np.ndarray, labels: Sequence[str], config: FinetuneConfig,
                 loss_fn: Any, soft: Any, out: Path, progress: bool):
        import torch
        self.clf, self.cached, self.config, self.loss_fn, self.soft = clf, cached, config, loss_fn, soft
        self.tr_texts, self.tr_y, self.dev_texts, self.dev_y, self.labels = tr_texts, tr_y, dev_texts, dev_y, labels
        self.out, self.progress = out, progress
        self.model = torch.nn.ModuleDict({"st": clf.st, "head": clf.head, "drop": clf.drop})  # what the loop trains
        self.lengths = [len(t) for t in tr_texts] if cached is None else [int(n) for n in cached.train.lengths]
        self.steps_per_epoch = math.ceil(len(tr_texts) / config.batch_size)
        self.best_dev: dict[str, Any] | None = None
        self._last: dict[str, Any] = {}

    def batches(self, epoch: int) -> list[list[int]]:
        return length_grouped_batches(self.lengths, self.config.batch_size, seed=self.config.seed * 1000 + epoch)

    def loss(self, model: Any, idx: list[int]) -> tuple[Any, dict[str, float]]:
        import torch
        clf, c = self.clf, self.config
        logits = clf.logits([self.tr_texts[i] for i in idx]) if self.cached is None else self.cached.logits(clf, idx)
        loss = self.loss_fn(logits, torch.from_numpy(self.tr_y[idx]).to(logits.device))
        if self.soft is not None:
            soft = self.soft[idx].to(logits.device)
            loss = (1 - c.distill_alpha) * loss + c.distill_alpha * distillation_loss(logits, soft,
                                                                                      c.distill_temperature)
        return loss, {}

    def evaluate(self, model: Any) -> dict[str, float]:
        from merc.metrics import evaluate_predictions
        pred = (self.clf.predict(self.dev_texts, progress=self.progress, desc="dev") if self.cached is None
                else self.cached.predict_dev(self.clf))
        self._last = json.loads(json.dumps(evaluate_predictions(self.dev_y, pred, self.labels), default=json_default))
        return {"dev_weighted_f1": self._last["weighted_f1"], "dev_accuracy": self._last["accuracy"]}

    def on_best(self, model: Any, epoch: int) -> None:
        """Swap the folder's contents for this epoch's encoder and head; the checkpoint and temp folders stay."""
        from safetensors.torch import save as st_save
        self.best_dev = self._last
        tmp = Path(tempfile.mkdtemp(dir=self.out, prefix=".best-"))
        self.clf.st.save(str(tmp))
        head = {k: v.detach().contiguous() for k, v in self.clf.head.state_dict().items()}
        atomic_write_bytes(tmp / HEAD_FILE, st_save(head))
        for old in self.out.iterdir():
            if old.name.startswith(".") or old == tmp:
                continue
            shutil.rmtree(old) if old.is_dir() else old.unlink()
        for new in tmp.iterdir():
            os.replace(new, self.out / new.name)
        tmp.rmdir()

    def state_dict(self) -> dict[str, Any]:
        return {"best_dev": json.dumps(self.best_dev)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_dev = json.loads(state["best_dev"])


class _OnStep(Callback):
    """``on_step(epoch, step in epoch)`` after every optimizer step, as ``finetune_text_encoder`` promises."""

    def __init__(self, fn: Callable[[int, int], None], steps_per_epoch: int):
        self.fn, self.spe = fn, steps_per_epoch

    def on_step_end(self, model: Any, batch: Any, step: int) -> None:
        self.fn(step // self.spe, step % self.spe + 1)


def score_folder(out_dir: str | Path, corpus: Corpus, split: str = "test", *,
                 progress: bool = False) -> dict[str, Any] | None:
    """A tuned folder's own classifier on ``split`` of ``corpus``: the saved encoder, read as its
    ``merc_encoder.json`` says (template, context, pooling), and its saved head. None: no labelled utterances."""
    from merc.metrics import evaluate_predictions
    if not corpus.splits.get(split):
        return None
    best, enc = folder_classifier(out_dir, len(corpus.labels))
    st, spec = enc.model, enc.context
    texts, y, _ = _labelled(corpus, split, enc.template, (spec, st.tokenizer) if spec is not None else None)
    if not len(texts):
        return None
    return evaluate_predictions(y, best.predict(texts, progress=progress, desc=split), corpus.labels)


def loss_function(train_y: Sequence[int], n_labels: int, config: FinetuneConfig) -> Any:
    """Cross-entropy weighted per class by ``config.class_weights`` from the training label counts (mean 1)."""
    import torch

    w = class_weights(np.bincount(np.asarray(train_y, dtype=int), minlength=n_labels), config.class_weights,
                      beta=config.cb_beta)
    from merc.device import current_device
    return torch.nn.CrossEntropyLoss(weight=None if w is None else torch.tensor(w, dtype=torch.float32,
                                                                                device=current_device()))


def finetune_text_encoder(corpus: Corpus, out_dir: str | Path, config: FinetuneConfig | None = None, *,
                          progress: bool = True, score_test: bool = True,
                          on_step: Callable[[int, int], None] | None = None) -> FinetuneResult:
    """Fine-tune ``config.base`` on ``corpus`` train, select the epoch on dev, save it to ``out_dir``.

    ``out_dir`` becomes a sentence-transformers folder plus ``merc_encoder.json`` (template, labels,
    config, history, dev/test scores of the encoder's own classifier) and ``classifier.safetensors``.
    ``on_step(epoch, step)`` is called after every optimizer step (and after any checkpoint it triggered).
    """
    import torch

    config = config or FinetuneConfig()
    out = Path(out_dir)
    if not (out / CHECKPOINT).is_file() and out.is_dir() and any(not p.name.startswith(".") for p in out.iterdir()):
        raise OutputExistsError(f"{out} is not empty (and holds no checkpoint to resume); choose another --out "
                              "or delete it")
    torch.manual_seed(config.seed)
    st, base_enc = _load_base(config.base)
    st.max_seq_length = config.max_length
    spec = None
    if config.context_past or config.context_future:
        spec = ContextSpec(config.context_past, config.context_future,
                           config.context_marker or default_sep(st.tokenizer), config.max_length, config.pooling)
    target = pooling_target(st, spec)
    ctx = (spec, st.tokenizer) if spec is not None else None
    tr_texts, tr_y, tr_ids = _labelled(corpus, "train", config.template, ctx)
    dev_texts, dev_y, _ = _labelled(corpus, "dev", config.template, ctx)
    if len(tr_texts) == 0 or len(dev_texts) == 0:
        raise InputError(f"{corpus.name}: fine-tuning needs labelled train and dev utterances "
                         f"(train {len(tr_texts)}, dev {len(dev_texts)})")
    if config.max_train is not None:
        tr_texts, tr_y, tr_ids = tr_texts[:config.max_train], tr_y[:config.max_train], tr_ids[:config.max_train]
    soft, teacher = None, None  # (n_train, n_classes) the teacher's logits, when distilling
    if config.teacher:
        from merc.encoders.distill import teacher_features
        teacher = teacher_features(config.teacher, corpus, "train", progress=progress)
        soft = torch.from_numpy(teacher.take(tr_ids))  # matched by id
    out.mkdir(parents=True, exist_ok=True)  # only now: a config or input error leaves no empty folder behind

    clf = EncoderClassifier(st, len(corpus.labels), config.dropout, target)
    cached = _layer_cache(st, base_enc, config, tr_texts, dev_texts, progress=progress,
                          target=target)  # None: all layers
    task = _FinetuneTask(clf, cached, tr_texts, tr_y, dev_texts, dev_y, corpus.labels, config,
                         loss_function(tr_y, len(corpus.labels), config), soft, out, progress)
    total = task.steps_per_epoch * config.epochs
    loop = LoopConfig(epochs=config.epochs, lr=config.lr, weight_decay=config.weight_decay, schedule="linear",
                      warmup_steps=max(1, int(config.warmup * total)), grad_clip=1.0, keep_best=False,
                      checkpoint_minutes=config.checkpoint_minutes, epoch_base=1, timings=True,
                      desc=f"fine-tune {base_enc.name}", step_bar=True, log_epochs=True)
    # the one decay rule (merc.optim), the encoder (its trainable layers) and the head at their own rates
    groups = [*param_groups(st, config.weight_decay, lr=config.lr),
              *param_groups(clf.head, config.weight_decay, lr=config.head_lr)]
    res = run_loop(task.model, task, loop, groups=groups, checkpoint=out / CHECKPOINT,
                   settings={**asdict(config), "labels": list(corpus.labels)}, defaults=asdict(FinetuneConfig()),
                   callbacks=[_OnStep(on_step, task.steps_per_epoch)] if on_step else (), progress=progress,
                   device=st.device)  # the command's --device: the encoder was loaded there

    seconds = res.seconds
    meta = {"template": config.template, **({"context": spec.to_dict()} if spec is not None else {}),
            "labels": corpus.labels, "corpus": corpus.name, "base": config.base,
            "base_fingerprint": base_enc.fingerprint, "config": asdict(config), "best_epoch": res.best_epoch,
            "history": res.rows, "dev": task.best_dev, "test": None,
            "n_train": len(tr_texts), "seconds": round(seconds, 1)}
    if teacher is not None:
        meta["teacher_fingerprint"] = teacher.meta["fingerprint"]
    if cached is not None:
        meta["layer_cache"] = {"folder": str(cached.train.folder), "frozen_layers": cached.n_frozen,
                               "train_layers": config.train_layers, "build_seconds": cached.build_seconds(),
                               "build_cpu_seconds": cached.build_seconds("cpu_seconds"),
                               "seconds_this_run": round(cached.seconds, 1),
                               "train_tokens": int(cached.train.lengths.sum())}
    write_json(out / META_FILE, meta)
    test_scores = score_folder(out, corpus, "test", progress=progress) if score_test else None  # test once
    if test_scores is not None:
        write_json(out / META_FILE, {**meta, "test": test_scores})
    (out / CHECKPOINT).unlink(missing_ok=True)
    return FinetuneResult(out, res.best_epoch, task.best_dev or {}, test_scores, res.rows, seconds)
