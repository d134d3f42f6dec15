"""Export (MINDIR, ONNX, AIR; each verified) and prediction with any exported or checkpointed
model."""

# format -> file extension; the one list of formats the exporter, the CLI and the tasks use
FORMATS = {"MINDIR": ".mindir", "ONNX": ".onnx", "AIR": ".air"}
