"""Built-in synthetic datasets, generated in memory and deterministic for a seed."""

from labelwise.data.synth.patchml import load_source, make_patchml, write_patchml
from labelwise.data.synth.shapes import make_shapes

__all__ = ["load_source", "make_patchml", "make_shapes", "write_patchml"]
