"""Export (MINDIR, ONNX, AIR; each verified) and prediction with any exported or checkpointed
model."""
