"""Networks by name: a flat registry from the config's ``model.name`` to a constructor."""

from labelwise.models.networks import MODELS, build_model
from labelwise.models.unet_mss import UNetMSS

__all__ = ["MODELS", "UNetMSS", "build_model"]
