"""Sequence models: the CPU selective scan, the Mamba block, and the dialogue models the trainer uses."""
from merc.models.dialogue import DialogueConfig, DialogueModel
from merc.models.mamba import BiMamba, Mamba, MambaConfig, MambaLayer, MambaStack, MambaState, flip_padded
from merc.models.scan import selective_scan, selective_scan_ref

__all__ = ["BiMamba", "DialogueConfig", "DialogueModel", "Mamba", "MambaConfig", "MambaLayer", "MambaStack",
           "MambaState", "flip_padded", "selective_scan", "selective_scan_ref"]
