"""Stand-in media encoders that decode real media (RMS statistics of the audio, mean colour of the frames),
an untrained run over them, and a folder of espeak clips with the usual faults: cheap enough for the fast
tests of what merc says about each utterance's media (predict, train, evaluate)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from merc.encoders.audio import AudioEncoder
from merc.encoders.base import MediaEncoder, media_segment, register_encoder
from merc.errors import MissingMedia, TooLittleSpeech
from merc.testing.fakes import HashedWords

LABELS = ["calm", "happy"]


class RmsAudio(AudioEncoder):
    """(4,) RMS, mean, std, seconds of the decoded audio (the real decoding path of every audio encoder)."""
    name, dim, fingerprint = "rms-acct", 4, "rms-acct-v1"

    def _embed(self, wav: np.ndarray) -> np.ndarray:
        if np.sqrt(np.mean(wav ** 2)) < 1e-4:
            raise TooLittleSpeech("audio is silent")
        return np.array([np.sqrt(np.mean(wav ** 2)), wav.mean(), wav.std(), len(wav) / 16000], np.float32)


class MeanColour(MediaEncoder):
    """(3,) mean RGB of the decoded frames; absent without a video file or stream."""
    name, modality, dim, fingerprint = "colour-acct", "face", 3, "colour-acct-v1"
    needs = ("video",)

    def content_key(self, u) -> str:
        from merc.encoders.base import media_key
        return media_key(u.video, *media_segment(u, u.video))

    def _encode_one(self, u) -> np.ndarray:
        from merc.media.decode import load_frames
        if not u.video:
            raise MissingMedia(f"utterance {u.utterance_id} has no video file")
        frames = load_frames(u.video, fps=2, start=media_segment(u, u.video)[0], end=media_segment(u, u.video)[1])
        return np.mean([f.image.reshape(-1, 3).mean(0) for f in frames], axis=0) / 255


register_encoder("toy-acct", lambda **kw: HashedWords("toy-acct", 8), modality="text", dim=8, overwrite=True)
register_encoder("rms-acct", RmsAudio, modality="audio", dim=4, description="test double", overwrite=True)
register_encoder("colour-acct", MeanColour, modality="face", dim=3, description="test double", overwrite=True)


def make_run(path: Path, modalities=("text", "audio", "face")) -> Path:
    """An untrained run over the stand-in encoders (no training: the accounting does not depend on the weights)."""
    import torch

    from merc.models.dialogue import DialogueConfig
    from merc.training.adapters import build_run_model
    from merc.training.run import RunConfig, save_run
    from merc.training.trainer import TrainConfig
    dims = {"text": 8, "audio": 4, "face": 3}
    torch.manual_seed(0)
    mc = DialogueConfig(kind="gru", input_dims={m: dims[m] for m in modalities}, n_classes=len(LABELS), d_model=8,
                        n_layers=1)
    enc = {"text": ["toy-acct"], "audio": ["rms-acct"], "face": ["colour-acct"]}
    fps = {"text": ["toy-acct-v1"], "audio": ["rms-acct-v1"], "face": ["colour-acct-v1"]}
    config = RunConfig(model=mc, train=TrainConfig(), dataset="jsonl", data_dir=str(path), modalities=list(modalities),
                       text_encoder="toy-acct", encoders={m: enc[m] for m in modalities},
                       encoder_fingerprints={m: fps[m] for m in modalities})
    return save_run(path, build_run_model(mc), config, LABELS)


def build_clips(tmp_path: Path) -> Path:
    """A folder of clips: two good mp4s (speech + face), a silent one, an audio-only one, a corrupt one."""
    from merc.testing.synth import face_images, make_audio_only_clip, make_clip, silence, speak, truncate_file
    d = tmp_path / "clips"
    face = face_images(1)[0]
    for i, text in enumerate(["I can't believe it.", "That is wonderful news."]):
        make_clip(speak(text, "en-us", d / f"s{i}.wav", cache_dir=tmp_path / "tts"), face, d / f"u{i}.mp4", fps=2)
    make_clip(silence(1.0, d / "quiet.wav", noise=0.0), face, d / "silent.mp4", fps=2)
    make_audio_only_clip(d / "s0.wav", d / "voice.mp4")
    truncate_file(make_clip(d / "s1.wav", face, d / "broken.mp4", fps=2), 0.3)
    return d


