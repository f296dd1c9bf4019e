"""Support-set parts with one job each (issue 24): pixel spacing, modality checks. The support-set segmenter
itself is :mod:`gmiseg_edge.runtime.support_set`."""
