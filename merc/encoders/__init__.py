"""Stage-1 encoders (frozen) of every modality, their registry, and the feature store."""
from merc.encoders.base import (
    Encoder,
    EncodeResult,
    EncoderInfo,
    available_encoders,
    cache_root,
    get_encoder,
    register_encoder,
)
from merc.encoders.features import Features
from merc.encoders.store import FeatureStore, extract_split
from merc.encoders.text import SentenceTransformerEncoder, TextEncoder, mpnet_model_dir

__all__ = ["EncodeResult", "Encoder", "EncoderInfo", "FeatureStore", "Features", "SentenceTransformerEncoder",
           "TextEncoder", "available_encoders", "cache_root", "extract_split", "get_encoder", "mpnet_model_dir",
           "register_encoder"]
