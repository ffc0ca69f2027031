"""A multimodal benchmark corpus in the MELD raw layout: real MELD dialogues re-voiced and re-faced.

What it is: whole dialogues from MELD's own train/dev/test splits (real text, speakers and emotion
labels, each split's label mix kept), where every utterance becomes a clip ``dia{D}_utt{U}.mp4`` of a
still face photo (5 fps, 224 px, a slight drift) and espeak-ng speech of the utterance's text. Each
speaker has one espeak-ng voice with its own base pitch and one face photo (real photos that Python
packages ship), the same in every clip. For a fraction ``signal`` of the utterances (drawn separately
for audio and face) the cue follows the label: the prosody (espeak ``-a`` amplitude, ``-p`` pitch,
``-s`` rate, relative to the speaker's base voice; :data:`PROSODY`) and the facial expression (a
landmark-driven warp of the photo, :mod:`merc.testing.expression`) show the utterance's emotion; the
rest are neutral. With ``control=True`` the cues are drawn from the same distribution but independently
of the label (the labels of the split, shuffled). A few clips get realistic defects (missing, truncated,
black frames without a face, no audio stream) so missing-modality handling is exercised.

What it can answer: does a pipeline *use* a modality when that modality carries information? With
``signal`` the audio and face carry label information that text does not (text + audio + face should
beat text alone); with the control they carry none (adding them should not help, and any gain is an
artefact). It can also exercise extraction, missing-modality masks and throughput at scale.

What it cannot answer: how accurate a system is on real multimodal conversations. The voices are
espeak-ng, the faces are still photos with painted-on expressions and the emotion-to-cue mapping is ours
and far cleaner than real acting; numbers here say nothing about real-world audio or face accuracy —
that needs MELD.Raw (the Friends clips) or IEMOCAP, which we cannot ship.

Read it with ``merc.data.load_corpus("meld", root, media_dir=root)``; ``mmcorpus.json`` beside the CSVs
holds the configuration and counts, ``mmcorpus_utterances.jsonl`` the per-utterance ground truth
(voice, face, the emotion each cue shows, espeak parameters, defect).

References: MELD (Poria et al., ACL 2019); espeak-ng prosody options (``espeak-ng --help``); the
notes in docs/offline-models.md ("Media and test fixtures").
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import multiprocessing as mp
import os
import random
import shutil
import subprocess
import tempfile
import zlib
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from merc.data import load_corpus
from merc.data.schema import Conversation
from merc.errors import ConfigError, MissingDependencyError
from merc.io import atomic_write_bytes, atomic_write_text, write_json
from merc.media.decode import load_audio
from merc.testing.expression import EMOTIONS, express, landmarks
from merc.testing.synth import (
    MELD_COLUMNS,
    MELD_MEDIA,
    VOICES,
    _meld_time,
    face_images,
    make_clip,
    make_video_only_clip,
)

log = logging.getLogger(__name__)

# emotion -> (espeak -a amplitude, -p pitch offset from the speaker's base, -s rate factor). Aroused
# emotions are loud, high and fast; sadness quiet, low and slow (Scherer 2003, "Vocal communication of
# emotion"); values checked by eGeMAPS (docs/offline-models.md).
PROSODY: dict[str, tuple[int, int, float]] = {
    "neutral": (100, 0, 1.00), "joy": (150, 18, 1.12), "surprise": (165, 28, 1.00), "anger": (190, 6, 1.22),
    "sadness": (45, -22, 0.75), "fear": (75, 24, 1.30), "disgust": (85, -14, 0.85),
}
# one base pitch (distinct) and rate per voice in merc.testing.synth.VOICES (same order)
BASE_PITCH = [40, 60, 45, 55, 35, 65, 50, 42, 58, 48, 52]
BASE_SPEED = [170, 170, 160, 160, 160, 180, 170, 180, 180, 170, 180]
DEFECTS = ("missing", "corrupt", "no_face", "no_audio")


@dataclass
class MMCorpusConfig:
    """What to generate. Dialogue counts are per MELD split; ``signal`` is the fraction of utterances
    whose cue follows the label (``audio_signal`` / ``face_signal`` override it per modality)."""
    train_dialogues: int = 150
    dev_dialogues: int = 30
    test_dialogues: int = 40
    signal: float = 0.7
    audio_signal: float | None = None
    face_signal: float | None = None
    control: bool = False
    defect_rate: float = 0.02  # fraction of utterances with a defect, split evenly over defect_kinds
    defect_kinds: tuple[str, ...] = DEFECTS
    n_main: int = 6  # the most frequent speakers get their own voice and face; the rest share a pool
    n_faces: int = 38  # face identities used (merc.testing.synth.face_images finds 38 distinct ones with dlib)
    expression_strength: float = 1.0
    fps: int = 5
    size: int = 224
    sample_rate: int = 16000
    seed: int = 0
    selection_tries: int = 300  # random dialogue subsets tried per split; the closest label mix wins

    def validate(self) -> None:
        for name in ("signal", "audio_signal", "face_signal", "defect_rate"):
            v = getattr(self, name)
            if v is not None and not 0.0 <= v <= 1.0:
                raise ConfigError(f"MMCorpusConfig.{name} is {v}; expected a fraction in [0, 1]")
        bad = set(self.defect_kinds) - set(DEFECTS)
        if bad:
            raise ConfigError(f"unknown defect kind(s) {sorted(bad)}; expected some of {list(DEFECTS)}")
        if min(self.train_dialogues, self.dev_dialogues, self.test_dialogues) < 1:
            raise ConfigError("every split needs at least one dialogue")


# planning

def _label_mix(convs: list[Conversation]) -> np.ndarray:
    c = Counter(u.emotion for conv in convs for u in conv.utterances)
    v = np.array([c[e] for e in EMOTIONS], dtype=float)
    return v / max(1.0, v.sum())


def select_dialogues(convs: list[Conversation], n: int, rng: random.Random, tries: int) -> list[Conversation]:
    """``n`` whole dialogues whose label mix is closest (L1) to the split's, best of ``tries`` random draws."""
    if n >= len(convs):
        return list(convs)
    target = _label_mix(convs)
    best, best_d = None, np.inf
    for _ in range(max(1, tries)):
        pick = rng.sample(range(len(convs)), n)
        d = float(np.abs(_label_mix([convs[i] for i in pick]) - target).sum())
        if d < best_d:
            best, best_d = pick, d
    return [convs[i] for i in sorted(best)]


def _ids(uid: str) -> tuple[int, int]:
    """``train_dia12_utt3`` -> (12, 3)."""
    dia, utt = uid.rsplit("_dia", 1)[1].split("_utt")
    return int(dia), int(utt)


def _stable(name: str) -> int:
    return zlib.crc32(name.encode("utf-8"))


def assign_cast(speakers: Counter, n_main: int, n_faces: int) -> dict[str, dict[str, int]]:
    """speaker -> {voice, face}: the ``n_main`` most frequent speakers get voice i and face i; every other
    speaker a voice and face from the rest of the pool, chosen by a hash of the name (stable)."""
    n_main = min(n_main, len(VOICES) - 1, n_faces - 1)
    order = sorted(speakers, key=lambda s: (-speakers[s], s))
    cast = {}
    for i, s in enumerate(order):
        if i < n_main:
            cast[s] = {"voice": i, "face": i}
        else:
            h = _stable(s)
            cast[s] = {"voice": n_main + h % (len(VOICES) - n_main), "face": n_main + (h >> 8) % (n_faces - n_main)}
    return cast


def espeak_params(voice: int, emotion: str) -> dict[str, Any]:
    """espeak-ng arguments for speaker ``voice`` showing ``emotion``: voice name, amplitude, pitch, rate."""
    amp, dp, fs = PROSODY[emotion]
    return {"voice": VOICES[voice], "a": amp, "p": int(np.clip(BASE_PITCH[voice] + dp, 0, 99)),
            "s": int(round(BASE_SPEED[voice] * fs))}


def plan_corpus(source_dir: str | os.PathLike, cfg: MMCorpusConfig) -> list[dict[str, Any]]:
    """Deterministic per-utterance plan (order: split, dialogue, utterance) from the MELD CSVs in ``source_dir``."""
    cfg.validate()
    src = load_corpus("meld", source_dir)
    rng = random.Random(cfg.seed)
    n = {"train": cfg.train_dialogues, "dev": cfg.dev_dialogues, "test": cfg.test_dialogues}
    chosen = {s: select_dialogues(src.splits[s], n[s], rng, cfg.selection_tries) for s in ("train", "dev", "test")}
    speakers = Counter(u.speaker for convs in chosen.values() for c in convs for u in c.utterances)
    cast = assign_cast(speakers, cfg.n_main, cfg.n_faces)
    a_sig = cfg.signal if cfg.audio_signal is None else cfg.audio_signal
    f_sig = cfg.signal if cfg.face_signal is None else cfg.face_signal
    plan: list[dict[str, Any]] = []
    for split in ("train", "dev", "test"):
        utts = [u for c in chosen[split] for u in c.utterances]
        labels = [u.emotion for u in utts]
        # drawn in both modes, so a signal corpus and its control share every draw but the cue's source
        u_audio = [rng.random() for _ in utts]
        u_face = [rng.random() for _ in utts]
        perm_audio, perm_face = rng.sample(labels, len(labels)), rng.sample(labels, len(labels))
        for i, u in enumerate(utts):
            d, k = _ids(u.utterance_id)
            who = cast[u.speaker]
            src_a = perm_audio[i] if cfg.control else labels[i]
            src_f = perm_face[i] if cfg.control else labels[i]
            audio_emo = src_a if u_audio[i] < a_sig else "neutral"
            face_emo = src_f if u_face[i] < f_sig else "neutral"
            plan.append({"uid": u.utterance_id, "split": split, "dia": d, "utt": k, "text": u.text,
                         "speaker": u.speaker, "emotion": u.emotion,
                         "sentiment": str(u.meta.get("sentiment", "")), "season": u.meta.get("season", ""),
                         "episode": u.meta.get("episode", ""), "start": u.start, "end": u.end,
                         "voice": who["voice"], "face": who["face"], "audio_emotion": audio_emo,
                         "face_emotion": face_emo, "espeak": espeak_params(who["voice"], audio_emo),
                         "defect": None})
    kinds = list(cfg.defect_kinds)
    if cfg.defect_rate > 0 and kinds:
        per_kind = max(1, int(round(cfg.defect_rate * len(plan) / len(kinds))))
        picked = rng.sample(range(len(plan)), min(len(plan), per_kind * len(kinds)))
        for j, i in enumerate(picked):
            plan[i]["defect"] = kinds[j % len(kinds)]
    return plan


# speech

def tts(text: str, params: dict[str, Any], *, sr: int = 16000, cache_dir: str | os.PathLike | None = None
        ) -> np.ndarray:
    """espeak-ng speech of ``text`` with ``params`` (voice, a, p, s) as float32 mono at ``sr``; cached by
    (text, voice, prosody, sr) under ``cache_dir``. At least 0.3 s (padded with silence)."""
    key = hashlib.sha1(f"{params['voice']}|{params['a']}|{params['p']}|{params['s']}|{sr}|{text}".encode()).hexdigest()
    cached = Path(cache_dir) / key[:2] / f"{key}.wav" if cache_dir is not None else None
    if cached is not None and cached.exists():
        try:
            wav, _ = sf.read(str(cached), dtype="float32")
            return wav
        except Exception:  # noqa: BLE001 - a damaged cache entry is re-made
            log.warning("damaged TTS cache entry %s; synthesizing again", cached)
    if shutil.which("espeak-ng") is None:
        raise MissingDependencyError("espeak-ng is not installed; it voices the benchmark corpus "
                                     "(Debian/Ubuntu: apt-get install espeak-ng)")
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.wav"
        # text on stdin: an utterance starting with "-" must not be read as an option
        subprocess.run(["espeak-ng", "-v", params["voice"], "-a", str(params["a"]), "-p", str(params["p"]),
                        "-s", str(params["s"]), "-w", str(raw)], input=(text or ".").encode("utf-8"),
                       check=True, capture_output=True)
        wav = load_audio(raw, sr=sr)
    wav = np.concatenate([wav, np.zeros(max(0, int(0.3 * sr) - len(wav)), np.float32)]).astype(np.float32)
    if cached is not None:
        buf = io.BytesIO()
        sf.write(buf, np.clip(wav, -1, 1), sr, format="WAV", subtype="PCM_16")
        atomic_write_bytes(cached, buf.getvalue())
        wav, _ = sf.read(io.BytesIO(buf.getvalue()), dtype="float32")  # what a later cache hit returns
    return wav


# clips (worker side)

_FACES: dict[tuple[int, str], np.ndarray] = {}  # (face index, emotion) -> RGB image; filled before forking


def prepare_faces(plan: list[dict[str, Any]], strength: float) -> dict[str, int]:
    """Warp each (face, emotion) the plan needs once; returns counts of warps dlib still detects as 1 face."""
    from merc.testing.expression import dlib_landmarker
    need = 1 + max(p["face"] for p in plan)
    faces = face_images(need)
    if len(faces) < need:
        raise ConfigError(f"the plan uses {need} face identities but only {len(faces)} were found; "
                          f"lower MMCorpusConfig.n_faces to {len(faces)}")
    detector, _ = dlib_landmarker()
    stats: Counter = Counter()
    for f, e in sorted({(p["face"], p["face_emotion"]) for p in plan}):
        pts = landmarks(faces[f])
        img = express(faces[f], e, strength, points=pts) if pts is not None else faces[f]
        _FACES[(f, e)] = img
        stats["one_face" if len(detector(img, 1)) == 1 else "not_one_face"] += 1
    return dict(stats)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _task_key(p: dict[str, Any], cfg: MMCorpusConfig) -> str:
    keep = {k: p[k] for k in ("uid", "text", "voice", "face", "face_emotion", "espeak", "defect")}
    keep.update(fps=cfg.fps, size=cfg.size, sr=cfg.sample_rate, strength=cfg.expression_strength)
    return hashlib.sha1(json.dumps(keep, sort_keys=True).encode()).hexdigest()


def _make_one(args: tuple[dict[str, Any], dict[str, Any], str, str | None]) -> dict[str, Any]:
    """Write one clip atomically; returns its record (never raises: an error is recorded)."""
    p, cfgd, out, cache_dir = args
    cfg = MMCorpusConfig(**cfgd)
    clip = Path(out) / MELD_MEDIA[p["split"]] / f"dia{p['dia']}_utt{p['utt']}.mp4"
    rec = {"uid": p["uid"], "clip": str(clip.relative_to(out)), "key": _task_key(p, cfg), "defect": p["defect"]}
    try:
        sr = cfg.sample_rate
        wav = tts(p["text"], p["espeak"], sr=sr, cache_dir=cache_dir)
        rec["duration"] = round(len(wav) / sr, 3)
        if p["defect"] == "missing":
            clip.unlink(missing_ok=True)
            rec["sha256"] = None
            return rec
        size = (cfg.size, cfg.size)
        with tempfile.TemporaryDirectory() as tmp:
            wav_path, tmp_clip = Path(tmp) / "speech.wav", Path(tmp) / "clip.mp4"
            sf.write(str(wav_path), np.clip(wav, -1, 1), sr, subtype="PCM_16")
            face = _FACES[(p["face"], p["face_emotion"])]
            if p["defect"] == "no_face":
                make_clip(wav_path, np.zeros_like(face), tmp_clip, fps=cfg.fps, size=size, background=(0, 0, 0), sr=sr)
            elif p["defect"] == "no_audio":
                make_video_only_clip(face, tmp_clip, len(wav) / sr, fps=cfg.fps, size=size)
            else:
                make_clip(wav_path, face, tmp_clip, fps=cfg.fps, size=size, sr=sr)
            data = tmp_clip.read_bytes()
        if p["defect"] == "corrupt":  # an interrupted copy: the first 30-70% of the bytes
            frac = 0.3 + 0.4 * (_stable(p["uid"]) % 1000) / 1000
            data = data[:int(len(data) * frac)]
        atomic_write_bytes(clip, data)
        rec["sha256"] = hashlib.sha256(data).hexdigest()
    except Exception as e:  # noqa: BLE001 - one bad utterance never stops the corpus
        rec["error"] = f"{type(e).__name__}: {e}"
    return rec


def _done(rec: dict[str, Any] | None, key: str, out: Path) -> bool:
    """Whether a recorded clip is still what the plan asks for (resume)."""
    if rec is None or rec.get("key") != key or "error" in rec:
        return False
    clip = out / rec["clip"]
    if rec.get("sha256") is None:
        return not clip.exists()
    return clip.is_file() and _sha(clip) == rec["sha256"]


# the corpus

@dataclass
class MMCorpus:
    root: Path
    config: MMCorpusConfig
    records: list[dict[str, Any]]  # per utterance: the plan plus duration, clip sha256, error
    summary: dict[str, Any] = field(default_factory=dict)


def write_meld_csvs(out: Path, plan: list[dict[str, Any]]) -> None:
    """``{train,dev,test}_sent_emo.csv`` with MELD's 11 columns (Sr No. renumbered; ids and times kept)."""
    for split in ("train", "dev", "test"):
        buf = io.StringIO(newline="")
        w = csv.writer(buf)  # CRLF line ends like the release
        w.writerow(MELD_COLUMNS)
        rows = [p for p in plan if p["split"] == split]
        for sr_no, p in enumerate(rows, start=1):
            w.writerow([sr_no, p["text"], p["speaker"], p["emotion"], p["sentiment"], p["dia"], p["utt"],
                        p["season"], p["episode"], _meld_time(p["start"]), _meld_time(p["end"])])
        atomic_write_text(out / f"{split}_sent_emo.csv", buf.getvalue())
        (out / MELD_MEDIA[split]).mkdir(parents=True, exist_ok=True)


def _summary(plan: list[dict[str, Any]], records: dict[str, dict], cfg: MMCorpusConfig,
             face_stats: dict[str, int]) -> dict[str, Any]:
    out: dict[str, Any] = {"splits": {}}
    for split in ("train", "dev", "test"):
        rows = [p for p in plan if p["split"] == split]
        out["splits"][split] = {
            "dialogues": len({p["dia"] for p in rows}), "utterances": len(rows),
            "labels": dict(Counter(p["emotion"] for p in rows).most_common()),
            "audio_cues": dict(Counter(p["audio_emotion"] for p in rows).most_common()),
            "face_cues": dict(Counter(p["face_emotion"] for p in rows).most_common()),
            "audio_cue_matches_label": round(float(np.mean([p["audio_emotion"] == p["emotion"] for p in rows])), 4),
            "face_cue_matches_label": round(float(np.mean([p["face_emotion"] == p["emotion"] for p in rows])), 4),
        }
    out["utterances"] = len(plan)
    out["dialogues"] = sum(s["dialogues"] for s in out["splits"].values())
    out["speakers"] = len({p["speaker"] for p in plan})
    out["defects"] = {k: sorted(p["uid"] for p in plan if p["defect"] == k) for k in cfg.defect_kinds}
    out["errors"] = {u: r["error"] for u, r in records.items() if "error" in r}
    out["speech_seconds"] = round(sum(r.get("duration", 0.0) for r in records.values()), 1)
    out["face_warps"] = face_stats
    return out


def generate(out: str | os.PathLike, source_dir: str | os.PathLike, cfg: MMCorpusConfig | None = None, *,
             workers: int = 2, cache_dir: str | os.PathLike | None = None, progress: bool = True) -> MMCorpus:
    """Generate (or resume) the corpus in ``out``; MELD CSVs are read from ``source_dir``.

    Clips already written for the same plan (recorded key and sha256 match) are skipped, so an
    interrupted run continues where it stopped; every file is written atomically. ``cache_dir`` caches
    espeak-ng output by (text, voice, prosody) and can be shared between corpora (default: ``out/.tts``).
    """
    from tqdm import tqdm
    cfg = cfg or MMCorpusConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cache_dir = str(cache_dir or out / ".tts")
    plan = plan_corpus(source_dir, cfg)
    face_stats = prepare_faces(plan, cfg.expression_strength)
    write_meld_csvs(out, plan)
    rec_dir = out / ".mmcorpus"
    previous: dict[str, dict] = {}
    state = rec_dir / "records.jsonl"
    if state.exists():
        for line in state.read_text(encoding="utf-8").splitlines():
            if line.strip():
                r = json.loads(line)
                previous[r["uid"]] = r
    records: dict[str, dict] = {}
    todo = []
    for p in plan:
        r = previous.get(p["uid"])
        if _done(r, _task_key(p, cfg), out):
            records[p["uid"]] = r
        else:
            todo.append(p)
    log.info("%d of %d clips to make (%d already done)", len(todo), len(plan), len(plan) - len(todo))
    cfgd = asdict(cfg)
    args = [(p, cfgd, str(out), cache_dir) for p in todo]
    done_since_save = 0

    def save() -> None:
        atomic_write_text(state, "".join(json.dumps(records[u]) + "\n" for u in records))

    bar = tqdm(total=len(args), desc=f"clips -> {out.name}", disable=not progress, smoothing=0.05)
    if workers > 1 and len(args) > 1:
        ctx = mp.get_context("fork")  # workers inherit the warped faces in _FACES
        with ctx.Pool(workers) as pool:
            for rec in pool.imap_unordered(_make_one, args, chunksize=4):
                records[rec["uid"]] = rec
                bar.update()
                done_since_save += 1
                if done_since_save >= 50:
                    save()
                    done_since_save = 0
    else:
        for a in args:
            rec = _make_one(a)
            records[rec["uid"]] = rec
            bar.update()
    bar.close()
    save()
    ordered = []
    for p in plan:
        r = records[p["uid"]]
        ordered.append({**p, "duration": r.get("duration"), "clip": r["clip"], "sha256": r.get("sha256"),
                        **({"error": r["error"]} if "error" in r else {})})
    summary = _summary(plan, records, cfg, face_stats)
    write_json(out / "mmcorpus.json", {"config": cfgd, "source": str(Path(source_dir).resolve()), **summary})
    atomic_write_text(out / "mmcorpus_utterances.jsonl", "".join(json.dumps(r) + "\n" for r in ordered))
    if summary["errors"]:
        log.warning("%d utterances failed (see mmcorpus.json 'errors'); run again to retry them",
                    len(summary["errors"]))
    return MMCorpus(out, cfg, ordered, summary)
