"""The plugin's widget (the Qt part of the viewer): prompts (a Shapes layer of boxes, a Points layer of clicks) into
a Labels layer, one label per object, through the runtime or a served model.

The interactive loop: the current slice is encoded in a worker thread (a progress bar runs meanwhile; the
embedding stays in the engine's cache and in the widget's handles of recent slices); every change of the prompts
on an encoded slice re-runs the decoder only, on the UI thread, with the object's previous low-res mask as
``mask_input`` (while its box is unchanged). Propagation through the volume and support-set runs are worker
jobs with progress and cancel (:mod:`gmiseg_edge.viewer.tasks`). Every problem is a napari notification (and
the widget's status line): the Labels layer is only written after a result is complete.

:class:`SegmentWidget` is put together from one part per job, each a mixin in its own module over the state
they share (:mod:`.state`): the controls (:mod:`.controls`), messages (:mod:`.messages`), the model, local or
on a server (:mod:`.model`), the image and its layers (:mod:`.image_layers`), encoding (:mod:`.encoding`),
prompts to mask on click (:mod:`.decoding`), worker jobs (:mod:`.workers`), propagation (:mod:`.propagation`),
support-set examples (:mod:`.examples`) and saving (:mod:`.saving`).
"""

from gmiseg_edge.viewer.widget.segment_widget import SegmentWidget

__all__ = ["SegmentWidget"]
