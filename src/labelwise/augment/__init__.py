"""Batched, differentiable tensor transforms (elastic deformation, crops, intensity) on any device.

Filled in by the capabilities that need them (DS6's elastic deformation, pretraining's views)."""
