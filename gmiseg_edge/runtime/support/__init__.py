"""Support sets, step by step (DESIGN §7): one module per step.

The 2D path: :mod:`.segmenter` (the support-set segmenter: it orchestrates the steps, DESIGN §7), :mod:`.supports`
(the supports: image, mask, spacing, cached embedding, grid cells, grey levels), :mod:`.appearance` (the embedding
probe's appearance model and score maps), :mod:`.locate` (registration and appearance give each support's
candidates), :mod:`.decode` (prompts from a candidate, SAM), :mod:`.choice` (which candidate a support answers
with), :mod:`.fusion` (SAM with the prior; the supports' locally weighted votes), :mod:`.strategies` (each step's
alternatives chosen by name), :mod:`.spacing` (each support and query in millimetres), :mod:`.modality` (supports
of another modality than the query are refused), :mod:`.selection` (atlas selection by whole-image likeness, an
option).

The 3D path (support *volumes* on a query *volume*): :mod:`.geometry` (voxel grids in LPS, one slice order),
:mod:`.register3d` (each support volume registered to the query in physical space), :mod:`.volume_prior` (the
warped labels fused by locally weighted voting: the 3D prior and the supports' disagreement),
:mod:`.appearance3d` (the embedding probe over the query volume as one search, for structures whose place
varies between patients), :mod:`.segment3d` (the choice between the two, SAM per slice, the result).
"""
