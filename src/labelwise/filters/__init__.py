"""Classical image filters: multi-scale Frangi vesselness, Otsu's threshold, small-component removal
(:mod:`labelwise.filters.vesselness`)."""

from labelwise.filters.vesselness import frangi_segment, otsu_threshold, remove_small_components, vesselness

__all__ = ["frangi_segment", "otsu_threshold", "remove_small_components", "vesselness"]
