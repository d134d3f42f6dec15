"""Export (MINDIR, ONNX, AIR; each verified) and prediction with any exported or checkpointed
model."""

# format -> file extension; the one list of formats the exporter, the CLI and the tasks use
FORMATS = {"MINDIR": ".mindir", "ONNX": ".onnx", "AIR": ".air"}
# MindSpore writes AIR only where CANN runs it: the one home of that rule
AIR_TARGET = "Ascend"


def air_needs_ascend(formats: list[str], device_target: str, what: str) -> str | None:
    """Why *formats* cannot be exported from *what* (a run or config on *device_target*), or
    None when they can."""
    if "AIR" not in [f.upper() for f in formats] or device_target == AIR_TARGET:
        return None
    return (
        f"export_formats: AIR needs device_target {AIR_TARGET} (MindSpore exports AIR only "
        f"there), but {what} has device_target {device_target}; drop AIR or use an "
        f"{AIR_TARGET} run"
    )
