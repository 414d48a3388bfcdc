"""Training recipes. A recipe is one class; ``METHODS`` maps the config's ``method:`` name to it."""

from labelwise.methods.base import Method
from labelwise.methods.supervised import Supervised

METHODS: dict[str, type[Method]] = {cls.name: cls for cls in (Supervised,)}

__all__ = ["METHODS", "Method", "Supervised"]
