"""Stage-1 encoders (frozen) of every modality, their registry, and the feature store."""
from merc.encoders.base import Encoder, EncodeResult, EncoderInfo, available_encoders, get_encoder, register_encoder
from merc.encoders.cache import Features, encode_split, feature_cache_dir
from merc.encoders.text import (
    SentenceTransformerEncoder,
    TextEncoder,
    available_text_encoders,
    cache_root,
    get_text_encoder,
    mpnet_model_dir,
    register_text_encoder,
)

__all__ = ["Features", "encode_split", "feature_cache_dir", "TextEncoder", "SentenceTransformerEncoder",
           "available_text_encoders", "cache_root", "get_text_encoder", "mpnet_model_dir", "register_text_encoder",
           "EncodeResult", "Encoder", "EncoderInfo", "available_encoders", "get_encoder", "register_encoder"]
