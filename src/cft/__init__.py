"""cft: Concept-guided Fine-Tuning of Vision Transformers."""

from cft import losses
from cft.errors import CftError
from cft.models import load_checkpoint, load_model, save_checkpoint, vit_layout
from cft.relevance import METHODS, normalize, relevance, relevance_with_logits, upsample

__version__ = "0.1.0"

__all__ = [
    "METHODS",
    "CftError",
    "__version__",
    "load_checkpoint",
    "load_model",
    "losses",
    "normalize",
    "relevance",
    "relevance_with_logits",
    "save_checkpoint",
    "upsample",
    "vit_layout",
]
