"""Synthetic conversational corpora with known faults: the fixtures for every QC test and benchmark.

Speech comes from espeak-ng (one voice per speaker), faces from real photos that Python packages ship
(scikit-image ``astronaut()``, matplotlib's ``grace_hopper.jpg``, scikit-image ``lfw_subset()``
upscaled 8x), and clips are encoded with PyAV (H.264 + AAC in mp4), so nothing is downloaded.

:func:`build_corpus_fixture` writes a corpus in the real on-disk layout of MELD, IEMOCAP or the
generic JSONL format, and injects faults into chosen utterances; the returned :class:`Fixture`
records the ground truth (``faults: utterance_id -> fault``) that the QC checks must recover.

Test and benchmark tooling (installed, as benchmarks use it), not part of the pipeline. Heavy packages
(PyAV, soundfile, Pillow, scikit-image, dlib, matplotlib) are imported inside the functions that use them,
so importing this module is cheap.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import random
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from merc.errors import MissingDependencyError

# espeak-ng voices (base voice + variant, pitch 0-99, words per minute), chosen for two properties the QC
# fixtures need. 56 random (base, variant, pitch, speed) candidates were scored on 6 sentences each:
# (1) pocketsphinx forced alignment must succeed on the right transcript (5-6 of 6 for those kept; some
# espeak voices, e.g. +Andy, +linda, +Tweaky, failed 8 of 8) and (2) a speaker encoder must tell them
# apart: greedily kept in order of alignment quality when the resemblyzer centroid has cosine < 0.85 to
# every voice already kept (each voice's own utterances are >= 0.91 to its centroid).
_PROSODY: dict[str, tuple[int, int]] = {
    "en-gb-scotland+f4": (70, 170), "en-us-nyc+f1": (60, 170), "en-gb-x-rp+m2": (70, 160),
    "en-us+m6": (30, 160), "en-gb-scotland+Alicia": (60, 160), "en-us-nyc+michel": (70, 180),
    "en-gb-x-rp+john": (50, 170), "en-gb-x-gbclan+anika": (60, 180), "en-us+steph": (50, 180),
    "en-gb-x-rp+edward": (30, 170), "en+klatt2": (40, 180),
}
VOICES: list[str] = list(_PROSODY)  # a cast larger than this reuses voices (faces stay distinct)

FAULTS = ("swapped_speaker", "wrong_transcript", "corrupt", "missing", "silent", "too_long", "no_face",
          "no_audio")
LAYOUTS = ("meld", "iemocap", "jsonl")
MELD_COLUMNS = ["Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID",
                "Season", "Episode", "StartTime", "EndTime"]
MELD_MEDIA = {"train": "train_splits", "dev": "dev_splits_complete", "test": "output_repeated_splits_test"}
_MELD_EMOTIONS = {"neutral": "neutral", "joy": "positive", "surprise": "positive", "anger": "negative",
                  "sadness": "negative", "disgust": "negative", "fear": "negative"}
_IEMOCAP_EMOTIONS = ["neu", "hap", "sad", "ang", "exc", "fru"]
_NAMES = ["Monica", "Joey", "Rachel", "Ross", "Phoebe", "Chandler", "Janice", "Gunther", "Mike", "Carol",
          "Emily", "Richard", "Susan", "Paul"]


# speech

def _default_cache() -> Path:
    return Path(os.environ.get("MERC_CACHE", Path.home() / ".cache" / "merc")) / "tts"


def write_wav(wav: np.ndarray, path: str | os.PathLike, sr: int = 16000) -> Path:
    """Write float32 mono audio in [-1, 1] as 16-bit PCM wav."""
    import soundfile as sf
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.clip(wav, -1, 1), sr, subtype="PCM_16")
    return path


def speak(text: str, voice: str, path: str | os.PathLike, *, sr: int = 16000,
          cache_dir: str | os.PathLike | None = None, pitch: int | None = None, speed: int | None = None) -> Path:
    """Synthesize ``text`` with espeak-ng ``voice`` into a 16-bit mono wav at ``sr`` Hz.

    ``pitch`` (0-99) and ``speed`` (words per minute) default to the voice's prosody in ``_PROSODY``.
    With ``cache_dir`` the result is cached by (voice, pitch, speed, sr, text), so rebuilding a fixture is fast.
    Raises MissingDependencyError when espeak-ng is not installed (``apt-get install espeak-ng``).
    """
    from merc.media.decode import load_audio
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    default_pitch, default_speed = _PROSODY.get(voice, (50, 175))
    pitch = default_pitch if pitch is None else pitch
    speed = default_speed if speed is None else speed
    key = hashlib.sha1(f"{voice}|{pitch}|{speed}|{sr}|{text}".encode()).hexdigest()
    cached = Path(cache_dir) / f"{key}.wav" if cache_dir is not None else None
    if cached is not None and cached.exists():
        shutil.copyfile(cached, path)
        return path
    if shutil.which("espeak-ng") is None:
        raise MissingDependencyError("espeak-ng is not installed; it synthesizes the speech of test fixtures "
                                     "(Debian/Ubuntu: apt-get install espeak-ng)")
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(speed), "-w", str(raw), "--", text],
                       check=True, capture_output=True)
        wav = load_audio(raw, sr=sr)
    write_wav(wav, path, sr)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, cached)
    return path


def silence(seconds: float, path: str | os.PathLike, *, sr: int = 16000, noise: float = 1e-4,
            seed: int = 0) -> Path:
    """A wav of ``seconds`` near-silence (faint white noise of amplitude ``noise``; 0 = digital zero)."""
    rng = np.random.default_rng(seed)
    wav = (rng.standard_normal(int(round(seconds * sr))) * noise).astype(np.float32)
    return write_wav(wav, path, sr)


# faces

def _dlib_models() -> tuple | None:
    """(HOG detector, 5-point shape predictor, face descriptor) when dlib + face-recognition-models exist."""
    try:
        import importlib.util

        import dlib
    except ImportError:
        return None
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        return dlib.get_frontal_face_detector(), None, None
    models = Path(spec.origin).parent / "models"
    return (dlib.get_frontal_face_detector(),
            dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat")),
            dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat")))


def _crop_to_face(img: np.ndarray, box: tuple[int, int, int, int], margin: float = 0.6) -> np.ndarray:
    left, t, r, b = box
    m = int(margin * max(r - left, b - t))
    h, w = img.shape[:2]
    return np.ascontiguousarray(img[max(0, t - m):min(h, b + m), max(0, left - m):min(w, r + m)])


def _candidate_faces():
    """Real face photos shipped by packages, in a fixed order."""
    from matplotlib import cbook
    from PIL import Image
    from skimage import data

    # astronaut(): the face is at about (175, 76)-(265, 166); the full image gives a second, false detection
    yield "astronaut", _crop_to_face(data.astronaut(), (175, 76, 265, 166))
    with cbook.get_sample_data("grace_hopper.jpg") as f:
        grace = np.asarray(Image.open(f).convert("RGB"))
    yield "grace_hopper", _crop_to_face(grace, (180, 139, 366, 325))
    yield from lfw_faces()


def distinct_faces(candidates: Iterable[tuple[str, np.ndarray]], n: int) -> list[tuple[str, np.ndarray]]:
    """The first ``n`` candidates with exactly one dlib face, each a different person by dlib's descriptor.

    Without dlib every candidate is taken; without face_recognition_models only the one-face rule applies."""
    models = _dlib_models()
    chosen: list[tuple[str, np.ndarray]] = []
    descriptors: list[np.ndarray] = []
    for name, img in candidates:
        if len(chosen) >= n:
            break
        if models is not None:
            detector, shape, encoder = models
            dets = detector(img, 1)
            if len(dets) != 1:
                continue
            if encoder is not None:
                d = np.asarray(encoder.compute_face_descriptor(img, shape(img, dets[0])))
                # dlib's same-person threshold is 0.6 (upscaled 25x25 LFW faces sit close together in
                # descriptor space: median pairwise distance 0.73; 38 of 93 pass at 0.6, 12 at 0.7)
                if any(np.linalg.norm(d - o) < 0.6 for o in descriptors):
                    continue
                descriptors.append(d)
        chosen.append((name, img))
    return chosen


def lfw_faces(start: int = 0, stop: int = 100) -> Iterator[tuple[str, np.ndarray]]:
    """scikit-image's LFW faces ``start:stop`` (the first 100 are faces, the rest are not), 8x bicubic, RGB."""
    from PIL import Image
    from skimage import data

    for i, face in enumerate(data.lfw_subset()[start:stop], start):
        g = Image.fromarray((face * 255).astype(np.uint8)).resize((200, 200), Image.BICUBIC)
        yield f"lfw_{i}", np.asarray(g.convert("RGB"))


@lru_cache(maxsize=4)
def _face_pool(n: int) -> tuple[tuple[str, np.ndarray], ...]:
    return tuple(distinct_faces(_candidate_faces(), n))


def face_images(n: int) -> list[np.ndarray]:
    """Up to ``n`` distinct real face identities, each an (H, W, 3) uint8 RGB image with one face.

    When dlib is importable, each image is kept only if its HOG detector finds exactly one face and its
    128-d descriptor is >= 0.6 (dlib's same-person threshold) from every image already kept (different
    people). Fewer than ``n`` are returned when the pool runs out (38 with dlib).
    """
    return [img.copy() for _, img in _face_pool(n)]


def no_face_image() -> np.ndarray:
    """A plain scene without a face (scikit-image ``coffee()``), (H, W, 3) uint8 RGB."""
    from skimage import data
    return data.coffee().copy()


# clips

def _fit(img: np.ndarray, width: int, height: int) -> np.ndarray:
    from PIL import Image
    h, w = img.shape[:2]
    s = min(width / w, height / h)
    size = (max(2, int(w * s)), max(2, int(h * s)))
    return np.asarray(Image.fromarray(img).resize(size, Image.BICUBIC))


def _canvas_frames(images: Sequence[np.ndarray], n_frames: int, size: tuple[int, int], background: tuple,
                   motion: int = 3):
    """Each image centred on a plain background, drifting a few pixels (slight motion)."""
    width, height = size
    fitted = [_fit(im, width - 2 * motion - 8, height - 8) for im in images]
    for k in range(n_frames):
        im = fitted[k % len(fitted)] if len(fitted) > 1 else fitted[0]
        canvas = np.empty((height, width, 3), np.uint8)
        canvas[:] = background
        dx = int(round(motion * np.sin(2 * np.pi * k / 25)))
        h, w = im.shape[:2]
        y, x = (height - h) // 2, (width - w) // 2 + dx
        canvas[y:y + h, x:x + w] = im
        yield canvas


def _add_audio_stream(container, sr: int):
    a = container.add_stream("aac", rate=sr)
    a.layout = "mono"
    a.bit_rate = 48000
    return a


def _encode_audio(container, stream, wav: np.ndarray, sr: int) -> None:
    import av
    block = 4096
    for i in range(0, len(wav), block):
        chunk = np.ascontiguousarray(wav[i:i + block], dtype=np.float32).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
        frame.sample_rate = sr
        frame.pts = i
        frame.time_base = Fraction(1, sr)
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)


def _read_wav(wav_path: str | os.PathLike, sr: int = 16000) -> np.ndarray:
    from merc.media.decode import load_audio
    return load_audio(wav_path, sr=sr)


def make_clip(wav_path: str | os.PathLike, image_or_frames: np.ndarray | Sequence[np.ndarray],
              out_path: str | os.PathLike, *, fps: int = 10, size: tuple[int, int] = (320, 240),
              background: tuple[int, int, int] = (70, 90, 110), sr: int = 16000) -> Path:
    """Encode an mp4 (H.264 video + AAC audio) showing the image(s) for exactly the audio's length.

    ``image_or_frames`` is one RGB image or a list cycled frame by frame; each is fitted onto a
    ``size`` canvas with a slight horizontal drift.
    """
    import av
    wav = _read_wav(wav_path, sr)
    images = [image_or_frames] if isinstance(image_or_frames, np.ndarray) else list(image_or_frames)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    n_frames = max(1, int(round(len(wav) / sr * fps)))
    with av.open(str(out_path), "w", format="mp4") as c:
        v = c.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "tune": "stillimage"})
        a = _add_audio_stream(c, sr)
        _encode_video(c, v, _canvas_frames(images, n_frames, size, background), size, fps)
        _encode_audio(c, a, wav, sr)
    return out_path


def write_gapped_audio(parts: Sequence[tuple[float, np.ndarray]], out_path: str | os.PathLike, *, sr: int = 16000,
                       codec: str = "aac") -> Path:
    """An audio-only file whose packets jump in time: ``parts`` = ``[(start seconds, wav), …]``, each wav's
    samples stamped from its start, nothing between (a recording concatenated from clips, or one with dropped
    packets). ``codec`` "aac" writes mp4, "pcm_s16le" matroska (lossless, for exact comparisons)."""
    import av
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    pcm = codec.startswith("pcm")
    with av.open(str(out_path), "w", format="matroska" if pcm else "mp4") as c:
        stream = c.add_stream(codec, rate=sr)
        stream.layout = "mono"
        for start, wav in parts:
            offset = int(round(start * sr))
            for i in range(0, len(wav), 1024):
                chunk = np.ascontiguousarray(wav[i:i + 1024], dtype=np.float32).reshape(1, -1)
                if pcm:
                    frame = av.AudioFrame.from_ndarray((np.clip(chunk, -1, 1) * 32767).astype(np.int16), format="s16",
                                                       layout="mono")
                else:
                    frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
                frame.sample_rate, frame.pts, frame.time_base = sr, offset + i, Fraction(1, sr)
                for packet in stream.encode(frame):
                    c.mux(packet)
        for packet in stream.encode(None):
            c.mux(packet)
    return out_path


def make_audio_only_clip(wav_path: str | os.PathLike, out_path: str | os.PathLike, *, sr: int = 16000) -> Path:
    """An mp4 holding only an AAC audio stream (no video)."""
    import av
    wav = _read_wav(wav_path, sr)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(out_path), "w", format="mp4") as c:
        _encode_audio(c, _add_audio_stream(c, sr), wav, sr)
    return out_path


def make_video_only_clip(image: np.ndarray, out_path: str | os.PathLike, seconds: float, *, fps: int = 10,
                         size: tuple[int, int] = (320, 240)) -> Path:
    """An mp4 holding only an H.264 video stream (like MELD test dia263_utt7, which has no audio)."""
    import av
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(out_path), "w", format="mp4") as c:
        v = c.add_stream("libx264", rate=fps, options={"preset": "ultrafast"})
        _encode_video(c, v, _canvas_frames([image], max(1, int(round(seconds * fps))), size, (70, 90, 110)), size, fps)
    return out_path


def _encode_video(c, v, canvases, size: tuple[int, int], fps: int) -> None:
    """Encode RGB canvases (H, W, 3) into video stream ``v`` of container ``c`` at ``fps``, then flush."""
    import av
    v.width, v.height, v.pix_fmt = size[0], size[1], "yuv420p"
    for k, canvas in enumerate(canvases):
        frame = av.VideoFrame.from_ndarray(canvas, format="rgb24")
        frame.pts = k
        frame.time_base = Fraction(1, fps)
        for packet in v.encode(frame):
            c.mux(packet)
    for packet in v.encode(None):
        c.mux(packet)


def truncate_file(path: str | os.PathLike, keep_fraction: float = 0.5) -> Path:
    """Corrupt a file by keeping only its first ``keep_fraction`` of bytes (like an interrupted copy)."""
    path = Path(path)
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep_fraction)])
    return path


# texts

_SUBJECTS = ["I", "we", "they", "you", "my sister", "the doctor", "our neighbor", "his father", "the old man",
             "her friend", "the kids", "my boss", "your cousin", "the driver", "the teacher", "my mother",
             "the police", "nobody", "everybody", "the waiter"]
# (base form, past form)
_VERBS = [("find", "found"), ("buy", "bought"), ("paint", "painted"), ("carry", "carried"), ("clean", "cleaned"),
          ("lose", "lost"), ("open", "opened"), ("sell", "sold"), ("watch", "watched"), ("fix", "fixed"),
          ("borrow", "borrowed"), ("move", "moved"), ("hide", "hid"), ("bring", "brought"), ("drop", "dropped"),
          ("wash", "washed"), ("order", "ordered"), ("steal", "stole"), ("break", "broke"), ("keep", "kept"),
          ("forget", "forgot"), ("cook", "cooked"), ("read", "read"), ("throw", "threw")]
_ADJS = ["red", "small", "heavy", "green", "broken", "wooden", "new", "strange", "yellow", "quiet", "large",
         "cold", "dirty", "cheap", "famous", "expensive", "tiny", "beautiful", "old", "funny", "purple"]
_NOUNS = ["table", "window", "bicycle", "letter", "basket", "guitar", "blanket", "camera", "ladder", "bottle",
          "piano", "lamp", "jacket", "boat", "chair", "picture", "bucket", "radio", "carpet", "sandwich",
          "turkey", "umbrella", "coffee", "pizza", "monkey", "necklace", "ticket", "wallet", "couch", "dinosaur"]
_PLACES = ["in the kitchen", "near the station", "at the market", "behind the house", "on the roof",
           "by the river", "in the office", "under the bridge", "at the airport", "in the garden",
           "at the coffee house", "in the hospital", "at the museum", "on the beach"]
_TIMES = ["yesterday", "last night", "this morning", "on Monday", "after dinner", "before the party",
          "every summer", "twice", "again", "tomorrow"]
_OPENERS = ["Oh,", "Well,", "Okay,", "Honestly,", "Wait,", "Hey,", "Look,", "No,", "Yeah,"]


def _object(rng: random.Random) -> list[str]:
    return ["the"] + ([rng.choice(_ADJS)] if rng.random() < 0.6 else []) + [rng.choice(_NOUNS)]


def sentence(rng: random.Random) -> str:
    """A short English sentence of 4-12 words from a fixed vocabulary (every word in common ASR lexicons).

    Statements, questions, exclamations and suggestions, so that two random sentences share little.
    """
    base, past = rng.choice(_VERBS)
    kind = rng.choice(["statement", "statement", "question", "wh", "exclaim", "suggest"])
    if kind == "statement":
        words, end = rng.choice(_SUBJECTS).split() + [past] + _object(rng), rng.choice(".!")
    elif kind == "question":
        aux = rng.choice(["did", "will", "can", "should"])
        words, end = [aux] + rng.choice(_SUBJECTS).split() + [base] + _object(rng), "?"
    elif kind == "wh":
        wh = rng.choice(["why", "where", "when", "how"])
        words, end = [wh, "did"] + rng.choice(_SUBJECTS).split() + [base] + _object(rng), "?"
    elif kind == "exclaim":
        words, end = ["I", "can't", "believe"] + rng.choice(_SUBJECTS).split() + [past] + _object(rng), "!"
    else:
        words, end = [rng.choice(["let's", "we should", "you should", "please"])] + [base] + _object(rng), "."
        words = " ".join(words).split()
    extras = [rng.choice(_PLACES).split(), rng.choice(_TIMES).split(), [rng.choice(_OPENERS)]]
    for extra in extras:
        if rng.random() < 0.5 and len(words) + len(extra) <= 12:
            words = extra + words if extra[0].endswith(",") else words + extra
    while len(words) < 4:
        words = words + rng.choice(_PLACES).split()
    text = " ".join(words)
    return text[0].upper() + text[1:] + end


# corpus fixture

@dataclass
class FixtureUtterance:
    """Ground truth for one utterance: what the media holds vs. what the annotation says."""
    utterance_id: str
    conversation_id: str
    split: str
    true_speaker: str
    label_speaker: str
    true_text: str
    label_text: str
    media: str  # the clip (mp4) or turn wav the corpus points at
    voice: str
    face: int  # index into face_images(); -1 when the clip shows no face or has no video
    fault: str | None = None


@dataclass
class Fixture:
    root: Path
    layout: str
    data_dir: Path
    media_dir: Path
    faults: dict[str, str]  # utterance_id -> fault name (ground truth); clean utterances are absent
    utterances: dict[str, FixtureUtterance] = field(default_factory=dict)
    speakers: dict[str, str] = field(default_factory=dict)  # speaker -> voice

    @property
    def clean(self) -> list[str]:
        return [u for u in self.utterances if u not in self.faults]


def _pick_faults(rng: random.Random, plan: list[tuple[str, str, str, int]], faults: dict[str, int],
                 layout: str) -> dict[str, str]:
    """Choose disjoint utterances for each fault. plan rows: (uid, conversation, speaker, n_speakers)."""
    unknown = set(faults) - set(FAULTS)
    if unknown:
        raise ValueError(f"unknown fault(s) {sorted(unknown)}; known: {list(FAULTS)}")
    if layout == "iemocap" and faults.get("no_face", 0):
        raise ValueError("fault 'no_face' needs per-utterance video; the IEMOCAP fixture has audio turns only")
    if layout == "iemocap" and faults.get("no_audio", 0):
        raise ValueError("fault 'no_audio' needs video clips; the IEMOCAP fixture has wav turns only")
    free = [row for row in plan]
    rng.shuffle(free)
    out: dict[str, str] = {}
    for fault in FAULTS:
        n = faults.get(fault, 0)
        pool = [r for r in free if r[0] not in out and (fault != "swapped_speaker" or r[3] >= 2)]
        if n > len(pool):
            raise ValueError(f"cannot inject {n} x {fault!r}: only {len(pool)} eligible utterances left; "
                             f"raise n_dialogues or utts_per_dialogue")
        for row in pool[:n]:
            out[row[0]] = fault
    return out


def _meld_time(seconds: float) -> str:
    ms = int(round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d},{ms:03d}"


def _split_of(i: int, n: int) -> str:
    """Dialogue i of n: the last goes to test and the one before to dev (when n >= 3), the rest to train."""
    if n >= 3 and i == n - 1:
        return "test"
    if n >= 3 and i == n - 2:
        return "dev"
    return "train"


def faulted_audio(fault: str | None, speech: Path, seconds: float, stem: Path, *, seed: int,
                  too_long_seconds: float) -> Path:
    """The soundtrack of an utterance with ``fault``: ``silent`` -> near-silence of the same length,
    ``too_long`` -> the speech followed by ``too_long_seconds`` of faint noise, anything else -> ``speech``.
    New files go to ``{stem}_silent.wav`` / ``{stem}_long.wav``."""
    if fault == "silent":
        return silence(seconds, f"{stem}_silent.wav", seed=seed)
    if fault == "too_long":
        filler = np.random.default_rng(seed).standard_normal(int(too_long_seconds * 16000)) * 1e-3
        return write_wav(np.concatenate([_read_wav(speech), filler.astype(np.float32)]), f"{stem}_long.wav")
    return speech


def write_faulted_clip(fault: str | None, wav: Path, face: np.ndarray, scene: np.ndarray, media: Path,
                       seconds: float, *, fps: int) -> bool:
    """Write the video clip of an utterance with ``fault``: ``no_face`` shows ``scene`` (no face), ``no_audio``
    has no audio stream, anything else shows ``face`` over ``wav``. True when the clip shows the face."""
    if fault == "no_face":
        make_clip(wav, scene, media, fps=fps)
        return False
    if fault == "no_audio":
        make_video_only_clip(face, media, seconds, fps=fps)
    else:
        make_clip(wav, face, media, fps=fps)
    return True


def damage_media(fault: str | None, media: Path, rng: random.Random) -> None:
    """``corrupt``: keep 30-70% of the file's bytes; ``missing``: delete it; other faults leave it alone."""
    if fault == "corrupt":
        truncate_file(media, 0.3 + 0.4 * rng.random())
    elif fault == "missing":
        media.unlink()


def build_corpus_fixture(root: str | os.PathLike, *, layout: str = "meld", n_dialogues: int = 4,
                         utts_per_dialogue: int = 5, n_speakers: int = 3, faults: dict[str, int] | None = None,
                         seed: int = 0, fps: int = 10, too_long_seconds: float = 60.0,
                         cache_dir: str | os.PathLike | None = "default") -> Fixture:
    """Write a small corpus in the real on-disk ``layout`` with known faults; return its ground truth.

    - ``meld``: ``<root>/MELD/{train,dev,test}_sent_emo.csv`` (all 11 columns, CRLF, MELD timestamps)
      and clips ``<root>/MELD/{train_splits,dev_splits_complete,output_repeated_splits_test}/dia{D}_utt{U}.mp4``.
    - ``iemocap``: ``<root>/IEMOCAP/Session{n}/dialog/EmoEvaluation/<dialog>.txt``,
      ``dialog/transcriptions/<dialog>.txt`` and ``sentences/wav/<dialog>/<turn>.wav``; two actors (F, M)
      per session (``n_speakers`` is ignored); the last dialogue goes to Session5 (the test session).
    - ``jsonl``: ``<root>/jsonl/{train,dev,test}.jsonl`` with clips under ``clips/`` (relative paths) and
      ``labels.json`` (the 7 MELD emotions).

    With >= 3 dialogues the last is the test split and the one before is dev (MELD, JSONL).
    Each speaker has their own espeak-ng voice and their own face. ``faults`` maps a fault name to how
    many utterances get it: swapped_speaker (label names another speaker of the dialogue; the media keeps
    the true voice and face), wrong_transcript (label text is another utterance's text), corrupt
    (truncated file), missing (file deleted), silent (audio is near-silence), too_long (speech followed by
    ``too_long_seconds`` of faint noise), no_face (frames show a scene without a face), no_audio (clip
    without an audio stream). ``cache_dir`` caches espeak output ("default": ``$MERC_CACHE/tts`` or
    ``~/.cache/merc/tts``; None: no cache).
    """
    import soundfile as sf
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
    if layout != "iemocap" and n_speakers < 1:
        raise ValueError(f"n_speakers must be >= 1, got {n_speakers}")
    cache = _default_cache() if cache_dir == "default" else (Path(cache_dir) if cache_dir else None)
    rng = random.Random(seed)
    root = Path(root)
    data_dir = root / {"meld": "MELD", "iemocap": "IEMOCAP", "jsonl": "jsonl"}[layout]
    data_dir.mkdir(parents=True, exist_ok=True)

    # 1. the plan: dialogues, speakers, texts, ids
    dialogues: list[dict] = []
    if layout == "iemocap":
        sessions = [5 if (n_dialogues >= 2 and i == n_dialogues - 1) else (i % 4) + 1 for i in range(n_dialogues)]
        used = sorted(set(sessions))
        cast = [f"Ses{s:02d}_{g}" for s in used for g in ("F", "M")]
        counters: dict[int, int] = {}
        for i, s in enumerate(sessions):
            counters[s] = counters.get(s, 0) + 1
            name = f"Ses{s:02d}{rng.choice('FM')}_impro{counters[s]:02d}"
            dialogues.append({"id": name, "split": "test" if s == 5 else "train", "session": s,
                              "speakers": [f"Ses{s:02d}_F", f"Ses{s:02d}_M"], "index": i})
    else:
        cast = _NAMES[:n_speakers] if n_speakers <= len(_NAMES) else [f"Speaker{i}" for i in range(n_speakers)]
        per_split: dict[str, int] = {}
        for i in range(n_dialogues):
            split = _split_of(i, n_dialogues)
            d = per_split.get(split, 0)
            per_split[split] = d + 1
            k = min(len(cast), 3)
            dialogues.append({"split": split, "d": d, "index": i, "speakers": rng.sample(cast, k),
                              "id": f"{split}_dia{d}" if layout == "meld" else f"c{i}"})
    faces = face_images(len(cast))
    if len(faces) < len(cast):
        raise ValueError(f"only {len(faces)} distinct faces available for {len(cast)} speakers")
    voice_of = {s: VOICES[i % len(VOICES)] for i, s in enumerate(cast)}
    face_of = {s: i for i, s in enumerate(cast)}

    texts: set[str] = set()
    plan: list[dict] = []
    for dia in dialogues:
        spk = list(dia["speakers"])
        order = spk + [rng.choice(spk) for _ in range(max(0, utts_per_dialogue - len(spk)))]
        rng.shuffle(order)
        for u, speaker in enumerate(order[:utts_per_dialogue]):
            text = sentence(rng)
            while text in texts:
                text = sentence(rng)
            texts.add(text)
            plan.append({"dia": dia, "u": u, "speaker": speaker, "text": text})
    for row in plan:
        dia = row["dia"]
        row["uid"] = (f"{dia['split']}_dia{dia['d']}_utt{row['u']}" if layout == "meld" else
                      f"c{dia['index']}_u{row['u']}" if layout == "jsonl" else None)
    if layout == "iemocap":  # turn names depend on the *labelled* speaker, fixed after faults; use a temp id
        for row in plan:
            row["uid"] = f"{row['dia']['id']}#{row['u']}"
    fault_of = _pick_faults(rng, [(r["uid"], r["dia"]["id"], r["speaker"], len(r["dia"]["speakers"]))
                                  for r in plan], faults or {}, layout)

    # 2. labels (what the annotation says)
    all_texts = [r["text"] for r in plan]
    for row in plan:
        fault = fault_of.get(row["uid"])
        row["fault"] = fault
        row["label_speaker"] = row["speaker"]
        row["label_text"] = row["text"]
        if fault == "swapped_speaker":
            row["label_speaker"] = rng.choice([s for s in row["dia"]["speakers"] if s != row["speaker"]])
        elif fault == "wrong_transcript":
            row["label_text"] = rng.choice([t for t in all_texts if t != row["text"]])
        if layout == "meld":
            row["emotion"] = rng.choice(list(_MELD_EMOTIONS))
        else:
            row["emotion"] = rng.choice(_IEMOCAP_EMOTIONS if layout == "iemocap" else list(_MELD_EMOTIONS))
    if layout == "iemocap":
        fault_of = {}
        for dia in dialogues:
            counts = {"F": 0, "M": 0}
            for row in (r for r in plan if r["dia"] is dia):
                g = row["label_speaker"][-1]
                row["uid"] = f"{dia['id']}_{g}{counts[g]:03d}"
                counts[g] += 1
                if row["fault"]:
                    fault_of[row["uid"]] = row["fault"]

    # 3. media
    fixture = Fixture(root=root, layout=layout, data_dir=data_dir, media_dir=data_dir, faults=fault_of,
                      speakers=dict(voice_of))
    tmp = Path(tempfile.mkdtemp(prefix="merc_synth_"))
    try:
        t_cursor: dict[str, float] = {}
        for n, row in enumerate(plan):
            dia, fault = row["dia"], row["fault"]
            voice = voice_of[row["speaker"]]
            speech = speak(row["text"], voice, tmp / f"{n}.wav", cache_dir=cache)
            dur = sf.info(str(speech)).duration
            start = t_cursor.get(dia["id"], 1.0 + rng.random() * 5)
            row["start"], row["end"] = start, start + dur
            t_cursor[dia["id"]] = start + dur + 0.2 + rng.random()
            wav_in = faulted_audio(fault, speech, dur, tmp / f"{n}", seed=seed + n, too_long_seconds=too_long_seconds)
            if layout == "iemocap":
                media = data_dir / f"Session{dia['session']}" / "sentences" / "wav" / dia["id"] / f"{row['uid']}.wav"
                media.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(wav_in, media)
                face = -1
            else:
                if layout == "meld":
                    media = data_dir / MELD_MEDIA[dia["split"]] / f"dia{dia['d']}_utt{row['u']}.mp4"
                else:
                    media = data_dir / "clips" / f"{row['uid']}.mp4"
                face = face_of[row["speaker"]]
                if not write_faulted_clip(fault, wav_in, faces[face], no_face_image(), media, dur, fps=fps):
                    face = -1
            damage_media(fault, media, rng)
            row["media"] = str(media)
            fixture.utterances[row["uid"]] = FixtureUtterance(
                utterance_id=row["uid"], conversation_id=dia["id"], split=dia["split"],
                true_speaker=row["speaker"], label_speaker=row["label_speaker"], true_text=row["text"],
                label_text=row["label_text"], media=str(media), voice=voice, face=face, fault=fault)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    # 4. annotation files
    if layout == "meld":
        _write_meld(data_dir, plan, rng)
    elif layout == "jsonl":
        _write_jsonl(data_dir, dialogues, plan)
    else:
        _write_iemocap(data_dir, dialogues, plan)
    return fixture


def _write_meld(data_dir: Path, plan: list[dict], rng: random.Random) -> None:
    for split in ("train", "dev", "test"):
        (data_dir / MELD_MEDIA[split]).mkdir(parents=True, exist_ok=True)
        episode = {}
        with open(data_dir / f"{split}_sent_emo.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)  # CRLF line ends like the release
            w.writerow(MELD_COLUMNS)
            for sr_no, row in enumerate((r for r in plan if r["dia"]["split"] == split), start=1):
                d = row["dia"]["d"]
                season, ep = episode.setdefault(d, (rng.randint(1, 10), rng.randint(1, 24)))
                w.writerow([sr_no, row["label_text"], row["label_speaker"], row["emotion"],
                            _MELD_EMOTIONS[row["emotion"]], d, row["u"], season, ep,
                            _meld_time(row["start"]), _meld_time(row["end"])])


def _write_jsonl(data_dir: Path, dialogues: list[dict], plan: list[dict]) -> None:
    lines: dict[str, list[str]] = {}
    for dia in dialogues:
        utts = []
        for row in (r for r in plan if r["dia"] is dia):
            rel = os.path.relpath(row["media"], data_dir)
            utts.append({"utterance_id": row["uid"], "speaker": row["label_speaker"], "text": row["label_text"],
                         "emotion": row["emotion"], "start": round(row["start"], 3), "end": round(row["end"], 3),
                         "audio": rel, "video": rel})
        lines.setdefault(dia["split"], []).append(json.dumps({"conversation_id": dia["id"], "utterances": utts}))
    for split, rows in lines.items():
        (data_dir / f"{split}.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    # the full label set, so a small fixture's train split need not contain every emotion
    (data_dir / "labels.json").write_text(json.dumps(sorted(_MELD_EMOTIONS)) + "\n", encoding="utf-8")


_IEMOCAP_LONG = {"neu": "Neutral", "hap": "Happiness", "sad": "Sadness", "ang": "Anger", "exc": "Excited",
                 "fru": "Frustration"}


def _write_iemocap(data_dir: Path, dialogues: list[dict], plan: list[dict]) -> None:
    for dia in dialogues:
        base = data_dir / f"Session{dia['session']}" / "dialog"
        (base / "EmoEvaluation").mkdir(parents=True, exist_ok=True)
        (base / "transcriptions").mkdir(parents=True, exist_ok=True)
        emo = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
        trans = []
        for row in (r for r in plan if r["dia"] is dia):
            s, e, lab = row["start"], row["end"], row["emotion"]
            emo += [f"[{s:.4f} - {e:.4f}]\t{row['uid']}\t{lab}\t[2.5000, 2.5000, 2.5000]",
                    f"C-E1:\t{_IEMOCAP_LONG[lab]};\t()", f"C-E2:\t{_IEMOCAP_LONG[lab]};\t()",
                    "A-E1:\tval 3; act 3; dom  3;\t()", ""]
            trans.append(f"{row['uid']} [{s:08.4f}-{e:08.4f}]: {row['label_text']}")
        (base / "EmoEvaluation" / f"{dia['id']}.txt").write_text("\n".join(emo) + "\n", encoding="utf-8")
        (base / "transcriptions" / f"{dia['id']}.txt").write_text("\n".join(trans) + "\n", encoding="utf-8")
