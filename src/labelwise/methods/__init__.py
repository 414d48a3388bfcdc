"""Training recipes. A recipe is one class; ``METHODS`` maps the config's ``method:`` name to it."""

from labelwise.methods.base import Method, build_optimizer
from labelwise.methods.ds6 import DS6
from labelwise.methods.fixmatch import FixMatch
from labelwise.methods.frangi import Frangi
from labelwise.methods.mean_teacher import MeanTeacher
from labelwise.methods.pretrain import Pretrain
from labelwise.methods.pseudo_label import PseudoLabel
from labelwise.methods.pseudo_supervisor import PseudoSupervisor
from labelwise.methods.supervised import Supervised

METHODS: dict[str, type[Method]] = {
    cls.name: cls for cls in (Supervised, DS6, Frangi, PseudoSupervisor, PseudoLabel, MeanTeacher, FixMatch, Pretrain)
}

__all__ = [
    "DS6",
    "METHODS",
    "build_optimizer",
    "FixMatch",
    "Frangi",
    "MeanTeacher",
    "Method",
    "Pretrain",
    "PseudoLabel",
    "PseudoSupervisor",
    "Supervised",
]
