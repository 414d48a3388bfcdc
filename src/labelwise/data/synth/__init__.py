"""Built-in synthetic datasets, generated in memory and deterministic for a seed."""

from labelwise.data.synth.shapes import make_shapes

__all__ = ["make_shapes"]
