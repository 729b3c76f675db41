"""The toy world: small synthetic scenes written in the exact file layouts of VQA v2, RefCOCO+, VCR, Conceptual
Captions, COCO captions and the text corpus, so the real loaders and configs run on it unchanged."""
from data.shape_world.generate import WORLD_SIZES, generate

__all__ = ["WORLD_SIZES", "generate"]
