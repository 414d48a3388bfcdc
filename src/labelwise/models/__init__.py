"""Networks by name: a flat registry from the config's ``model.name`` to a constructor."""

from labelwise.models.networks import MODELS, build_model

__all__ = ["MODELS", "build_model"]
