"""Regenerate the timm reference fixtures used by tests/unit/test_weights.py (run manually).

The CI venv has no torch, so the cross-framework check is split in two:

* here, in a scratch venv with torch + timm, deterministic numpy weights (``make_state_dict``)
  are loaded into timm's real ``inception_resnet_v2`` and its eval-mode logits for deterministic
  inputs (``make_inputs``) are saved, together with timm's exact state-dict key/shape list;
* in CI, the test regenerates the same weights with numpy alone, writes them as safetensors,
  imports them with ``irv2 import-weights`` and compares our logits with timm's.

It also writes a tiny safetensors file with F32/F16/BF16 tensors using the real ``safetensors``
library, to check our numpy-only reader against the reference writer.

Usage (from the repo root)::

    python3 -m venv /tmp/timmvenv
    /tmp/timmvenv/bin/pip install torch==2.13.0 timm safetensors "numpy<2"
    /tmp/timmvenv/bin/python tests/data/make_timm_reference.py

Only numpy is imported at module level: the test imports ``make_state_dict``/``make_inputs``.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REFERENCE = HERE / "timm_irv2_reference.npz"
DTYPES_FIXTURE = HERE / "safetensors_dtypes.safetensors"
WEIGHT_SEED = 20261129
INPUT_SEED = 7
SIZES = {75: 2, 299: 1}  # image size -> batch


def _value(key: str, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Deterministic, sanely scaled values for one timm tensor, chosen by its name."""
    rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
    if key.endswith("num_batches_tracked"):
        return np.zeros(shape, np.int64)
    if key.endswith(".bn.weight"):
        return rng.uniform(0.8, 1.2, shape).astype(np.float32)
    if key.endswith((".bn.bias", ".bn.running_mean")):
        return rng.normal(0.0, 0.1, shape).astype(np.float32)
    if key.endswith(".bn.running_var"):
        return rng.uniform(0.5, 1.5, shape).astype(np.float32)
    if key.endswith(".bias"):
        return rng.normal(0.0, 0.01, shape).astype(np.float32)
    fan_in = int(np.prod(shape[1:]))
    gain = 1.0 if key.startswith("classif.") else 2.0  # He scaling before ReLU keeps O(1) maps
    return (rng.standard_normal(shape) * np.sqrt(gain / fan_in)).astype(np.float32)


def make_state_dict(keys_shapes: list[tuple[str, list[int]]], seed: int = WEIGHT_SEED):
    """A timm-layout state dict {key: np.ndarray} for the given (key, shape) list."""
    return {key: _value(key, tuple(shape), seed) for key, shape in keys_shapes}


def make_inputs(seed: int = INPUT_SEED) -> dict[int, np.ndarray]:
    """Deterministic NCHW float32 inputs, one batch per image size in SIZES."""
    rng = np.random.default_rng(seed)
    return {s: rng.standard_normal((n, 3, s, s)).astype(np.float32) for s, n in SIZES.items()}


def load_reference(path: Path = REFERENCE) -> dict:
    """The committed fixture: keys/shapes list, timm logits per size, and version info."""
    with np.load(path) as z:
        keys_shapes = json.loads(z["keys_json"].tobytes().decode())
        meta = json.loads(z["meta_json"].tobytes().decode())
        logits = {s: z[f"logits_{s}"] for s in SIZES}
    return {"keys_shapes": keys_shapes, "logits": logits, "meta": meta}


def _import_timm():
    """Import timm; tolerate PyPI's CUDA-only torchvision wheel beside CPU torch.

    That wheel's C ops cannot load, so its fake-tensor registration for ``torchvision::nms``
    raises at import; timm needs none of those ops for this model, so skip the registrations.
    """
    import torch

    real = torch.library.register_fake

    def tolerant(op, func=None, /, **kwargs):
        if func is not None:
            try:
                return real(op, func, **kwargs)
            except RuntimeError:
                return func
        decorate = real(op, **kwargs)

        def apply(fn):
            try:
                return decorate(fn)
            except RuntimeError:
                return fn

        return apply

    torch.library.register_fake = tolerant
    try:
        import timm
    finally:
        torch.library.register_fake = real
    return timm


def main() -> None:
    import safetensors
    import torch
    from safetensors.torch import save_file

    timm = _import_timm()
    model = timm.create_model("inception_resnet_v2", pretrained=False, num_classes=1000).eval()
    keys_shapes = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    state = {k: torch.from_numpy(v) for k, v in make_state_dict(keys_shapes).items()}
    model.load_state_dict(state, strict=True)
    logits = {}
    with torch.no_grad():
        for size, x in make_inputs().items():
            logits[size] = model(torch.from_numpy(x)).numpy()
            print(
                f"{size}px logits: |max| {np.abs(logits[size]).max():.3f}, std "
                f"{logits[size].std():.3f}, argmax {logits[size].argmax(1)}"
            )
    meta = {
        "torch": torch.__version__,
        "timm": timm.__version__,
        "numpy": np.__version__,
        "weight_seed": WEIGHT_SEED,
        "input_seed": INPUT_SEED,
        "params": int(sum(p.numel() for p in model.parameters())),
    }
    np.savez_compressed(
        REFERENCE,
        keys_json=np.frombuffer(json.dumps(keys_shapes).encode(), np.uint8),
        meta_json=np.frombuffer(json.dumps(meta).encode(), np.uint8),
        **{f"logits_{s}": v for s, v in logits.items()},
    )
    dtypes = {
        "f32": torch.arange(6, dtype=torch.float32).reshape(2, 3) / 8,
        "f16": torch.tensor([[0.5, -1.25], [3.0, 65504.0]], dtype=torch.float16),
        "bf16": torch.tensor([1.5, -2.25, 3.0, 0.0078125, -256.0], dtype=torch.bfloat16),
    }
    save_file(dtypes, str(DTYPES_FIXTURE), metadata={"format": "pt"})
    print(f"wrote {REFERENCE} and {DTYPES_FIXTURE} (safetensors {safetensors.__version__})")
    print(json.dumps(meta))


if __name__ == "__main__":
    main()
