"""Media decoding: audio as 16 kHz mono float32, video as RGB frames at N fps (PyAV)."""
from merc.media.decode import Frame, MediaError, MediaInfo, load_audio, load_frames, probe

__all__ = ["Frame", "MediaError", "MediaInfo", "load_audio", "load_frames", "probe"]
