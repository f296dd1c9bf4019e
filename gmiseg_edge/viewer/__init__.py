"""A napari plugin (npe2 manifest ``napari.yaml``; the ``napari`` extra): a reader for the formats the toolkit
reads and a widget that turns boxes and clicks into a Labels layer through the runtime or a served model, with
propagation, support sets and saving with the source geometry (DESIGN §15).

It sits at the top of the import layers beside ``cli``: it calls ``runtime``, ``data`` and the serving client,
and nothing imports it. ``reader``, ``image``, ``prompts``, ``labels``, ``save``, ``engines`` and ``tasks`` are
Qt-free; ``widget`` is the Qt part.
"""
