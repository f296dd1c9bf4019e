"""The user-facing jobs as library functions: segment files (``segment``), evaluate (``evaluate``),
benchmark (``bench``), the main job (``demo``), overlay pictures (``overlays``).

They take plain values (paths, options objects, callbacks for progress) and return results; they print
nothing, know no command-line flag and no rich markup. :mod:`gmiseg_edge.cli` parses, calls and renders.
"""
