"""Training recipes. A recipe is one class; ``METHODS`` maps the config's ``method:`` name to it."""

from labelwise.methods.base import Method
from labelwise.methods.ds6 import DS6
from labelwise.methods.frangi import Frangi
from labelwise.methods.supervised import Supervised

METHODS: dict[str, type[Method]] = {cls.name: cls for cls in (Supervised, DS6, Frangi)}

__all__ = ["DS6", "METHODS", "Frangi", "Method", "Supervised"]
