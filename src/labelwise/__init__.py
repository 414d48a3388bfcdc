"""labelwise: train, evaluate and explain vision models when labels are imperfect."""

__version__ = "0.1.0"
