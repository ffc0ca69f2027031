"""Stage-1 encoders (frozen) and the per-(dataset, split, encoder) feature cache."""
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
           "available_text_encoders", "cache_root", "get_text_encoder", "mpnet_model_dir", "register_text_encoder"]
