"""One module per edge of the pipeline. Each converter maps an input artifact to an output artifact
(an ONNX ModelProto here) plus a record of how, which goes into the manifest."""
