"""The torch-free ground floor every other part builds on (numpy, OpenCV and Pillow; no torch, no onnx).

- ``transforms``: SAM's resize / normalise / pad and the coordinate maps (what the encoder input is);
- ``prompts``: prompt checks, SAM's decoder point layout, simulated prompts;
- ``graph_io``: the exported graphs' input and output names and the decoder's inputs (DESIGN §5);
- ``manifest``: the model folder's manifest, one typed reader and writer (DESIGN §6);
- ``files``: atomic writes, sha256, the user cache folder;
- ``errors``: one base class for every error whose message is the whole story.
"""
