"""The ``export`` stage: checkpoint -> MINDIR / ONNX / AIR, each verified by reloading it.

An export is only published after the written file has been loaded back and run on a fixed
input, and its output compared with the network's: MINDIR through ``nn.GraphCell``, ONNX through
onnxruntime (a dependency; were it missing, the file would be published marked not verified).
This is the guard against silent exporter bugs such as MindSpore's mis-ordered ONNX pads (see
the model's docstring). MINDIR keeps a dynamic batch dimension; ONNX (the exporter refuses
dynamic shapes) and AIR have a static batch of 1.

Input contract (issue 12): every export takes **uint8 NCHW RGB pixels 0..255** at its image size,
after the protocol's resize + center crop, and normalises them inside (the network's first op).
The contract is written next to the export as ``<file>.json`` (:func:`input_contract`) and, for
ONNX, also into the model's ``metadata_props`` (key ``irv2.input_contract``) when the ``onnx``
package is installed. ``irv2 predict`` reads it and preprocesses accordingly. The protocol is the
one the checkpoint records its weights expect (``models.protocol``); an explicit one that
disagrees is refused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import mindspore as ms
import numpy as np
from mindspore import nn

from irv2_core.errors import Irv2Error
from irv2_core.export import AIR_TARGET, FORMATS
from irv2_core.models.metadata import EVAL_PROTOCOLS, check_image_size
from irv2_core.models.protocol import resolve_protocol
from irv2_core.models.weights import load_model
from irv2_core.records import ExportRecord
from irv2_core.runtime.context import compile_cache_disabled, pynative_mode
from irv2_core.runtime.io import FILE_MODE, atomic_write_json, sha256_file

CONTRACT_VERSION = "irv2-input/1"
ONNX_METADATA_KEY = "irv2.input_contract"

TOLERANCE = 1e-3  # max |exported - network| per logit, relative to max(1, |logit| scale)
VERIFY_SEED = 0


def _check_format(fmt: str) -> str:
    fmt = str(fmt).upper()
    if fmt not in FORMATS:
        raise Irv2Error(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "AIR":
        target = ms.get_context("device_target")
        if target != AIR_TARGET:
            raise Irv2Error(
                "AIR export needs an Ascend device (device_target Ascend with CANN); this "
                f"process runs on {target}. Export MINDIR or ONNX here, or run the export on an "
                "Ascend machine."
            )
    return fmt


def output_path(out: str | os.PathLike[str], fmt: str) -> Path:
    """Where the export lands: *out* as given if it has the format's extension, else + it."""
    out = Path(out)
    ext = FORMATS[fmt]
    return out if out.suffix.lower() == ext else out.with_name(out.name + ext)


def contract_path(export_path: str | os.PathLike[str]) -> Path:
    """The input-contract sidecar of an export: ``<export file>.json``."""
    export_path = Path(export_path)
    return export_path.with_name(export_path.name + ".json")


def input_contract(protocol: str, image_size: int, fmt: str) -> dict[str, Any]:
    """What an export of *fmt* expects as input (written beside it as JSON)."""
    p = EVAL_PROTOCOLS[protocol]
    return {
        "contract": CONTRACT_VERSION,
        "dtype": "uint8",
        "layout": "NCHW",
        "channels": "RGB",
        "value_range": [0, 255],
        "shape": [None if fmt == "MINDIR" else 1, 3, image_size, image_size],
        "normalization": "inside the model: (x - 255*mean) / (255*std), float32",
        "protocol": protocol,
        "mean": list(p.mean),
        "std": list(p.std),
        "image_size": image_size,
        "resize": {
            "crop_pct": p.crop_pct,
            "square_resize": p.square_resize,
            "interpolation": p.interpolation,
            "then": "center crop to image_size",
        },
    }


def run_protocol(ckpt: str | os.PathLike[str]) -> str | None:
    """``eval_protocol`` of the run whose ``config.yaml`` sits beside *ckpt* (None if none)."""
    saved = Path(ckpt).parent / "config.yaml"
    if not saved.is_file():
        return None
    import yaml

    try:
        value = (yaml.safe_load(saved.read_text(encoding="utf-8")) or {}).get("eval_protocol")
    except (yaml.YAMLError, AttributeError):
        return None
    return value if value in EVAL_PROTOCOLS else None


def checkpoint_protocol(ckpt: str | os.PathLike[str], asked: str | None = None) -> str:
    """The protocol to run *ckpt* with: the one recorded in it (*asked* must agree); for a
    checkpoint without a record, *asked*, else its run's ``config.yaml``, else ``zoo``."""
    if asked is not None and asked not in EVAL_PROTOCOLS:
        raise Irv2Error(
            f"unknown eval protocol {asked!r}; choose one of: {', '.join(EVAL_PROTOCOLS)}"
        )
    return resolve_protocol(ckpt, asked, run_protocol(ckpt) or "zoo", "--protocol")


def verification_input(image_size: int, batch: int = 1) -> np.ndarray:
    """The fixed NCHW uint8 pixels that every export is checked on."""
    rng = np.random.default_rng(VERIFY_SEED)
    return rng.integers(0, 256, (batch, 3, image_size, image_size), dtype=np.uint8)


def _add_onnx_metadata(path: Path, contract: dict[str, Any]) -> bool:
    """Put the contract into the ONNX file's metadata_props (needs the ``onnx`` package)."""
    try:
        import onnx
    except ImportError:
        return False
    model = onnx.load(str(path))
    entry = model.metadata_props.add()
    entry.key, entry.value = ONNX_METADATA_KEY, json.dumps(contract, sort_keys=True)
    os.chmod(path, 0o600)  # MindSpore wrote it 0400
    onnx.save(model, str(path))
    return True


def _run_exported(path: Path, fmt: str, x: np.ndarray) -> tuple[np.ndarray | None, str]:
    """Run the exported file on *x*; return (output or None, what verified it)."""
    if fmt == "MINDIR":
        return nn.GraphCell(ms.load(str(path)))(ms.Tensor(x)).asnumpy(), "mindspore.GraphCell"
    if fmt == "ONNX":
        try:
            import onnxruntime as ort
        except ImportError:
            return None, "not verified (onnxruntime is not installed: pip install onnxruntime)"
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: x}
        return session.run(None, feed)[0], f"onnxruntime {ort.__version__}"
    return None, "not verified (AIR runs only on Ascend through CANN/ACL)"


def _ms_export(net, fmt: str, image_size: int, tmp_base: Path) -> Path:
    # ONNX refuses dynamic shapes and AIR is fixed-shape on Ascend; MINDIR keeps batch dynamic.
    if fmt == "MINDIR":
        spec = ms.Tensor(shape=[None, 3, image_size, image_size], dtype=ms.uint8)
    else:
        spec = ms.Tensor(verification_input(image_size))
    if fmt == "ONNX":  # ms.export(file_format="ONNX") is deprecated in MindSpore 2.10
        from mindspore import onnx as ms_onnx

        ms_onnx.export(net, spec, file_name=str(tmp_base))
    else:
        ms.export(net, spec, file_name=str(tmp_base), file_format=fmt)
    written = tmp_base.with_name(tmp_base.name + FORMATS[fmt])
    if not written.is_file():
        raise Irv2Error(f"MindSpore reported no error but wrote no {fmt} file at {written}")
    return written


def export_model(
    ckpt: str | os.PathLike[str],
    fmt: str,
    out: str | os.PathLike[str],
    num_classes: int | None = None,
    image_size: int = 299,
    residual_bias: bool | None = None,
    protocol: str | None = None,
) -> ExportRecord:
    """Export a checkpoint to MINDIR, ONNX or AIR at *image_size*, verify it, publish it atomically.

    ``num_classes``/``residual_bias`` default to what the checkpoint holds; *protocol* (whose
    mean/std the export applies to its uint8 input) to the one the checkpoint records, which a
    given *protocol* must equal (:func:`checkpoint_protocol`). The file goes to a temp name in
    *out*'s folder, is reloaded and compared with the network on a fixed input, and is renamed
    to *out* (the format's extension is appended if missing) only if the max abs difference is
    within tolerance; its input contract is written beside it as ``<file>.json``. Returns the
    :class:`~irv2_core.records.ExportRecord`.
    """
    fmt = _check_format(fmt)
    check_image_size(int(image_size))
    protocol = checkpoint_protocol(ckpt, protocol)
    final = output_path(out, fmt)
    final.parent.mkdir(parents=True, exist_ok=True)
    net, info = load_model(
        ckpt, num_classes=num_classes, residual_bias=residual_bias, input_protocol=protocol
    )
    contract = input_contract(protocol, int(image_size), fmt)
    tmp_base = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    folder_mode = final.parent.stat().st_mode & 0o7777
    written = None
    try:
        with compile_cache_disabled(), pynative_mode():
            written = _ms_export(net, fmt, int(image_size), tmp_base)
            if fmt == "ONNX":
                contract["onnx_metadata"] = _add_onnx_metadata(written, contract)
            result = _verify(net, written, fmt, int(image_size))
        os.chmod(written, FILE_MODE)  # MindSpore writes exports 0400
        # the contract first: an export never exists without it (a stale one is overwritten)
        atomic_write_json(contract_path(final), contract)
        os.replace(written, final)
    finally:
        if written is not None and written.exists():
            written.unlink()
        os.chmod(final.parent, folder_mode)  # ms.export chmods the folder to 0700
    return ExportRecord(
        format=fmt,
        path=str(final),
        bytes=final.stat().st_size,
        sha256=sha256_file(final),
        image_size=int(image_size),
        num_classes=info["num_classes"],
        checkpoint=str(ckpt),
        input_contract=contract,
        contract_path=str(contract_path(final)),
        **result,
    )


def _verify(net, path: Path, fmt: str, image_size: int) -> dict[str, Any]:
    """Compare the exported file's output with the network's; raise Irv2Error if they differ."""
    # Batch 2 proves MINDIR's dynamic batch works; ONNX/AIR are static at batch 1.
    batch = 2 if fmt == "MINDIR" else 1
    x = verification_input(image_size, batch)
    expected = net(ms.Tensor(x)).asnumpy()
    got, verified_with = _run_exported(path, fmt, x)
    shape = [None if fmt == "MINDIR" else 1, 3, image_size, image_size]
    result = {"verified_with": verified_with, "max_abs_diff": None, "input_shape": shape}
    result["batch"] = "dynamic" if fmt == "MINDIR" else "static 1"
    if got is None:
        return result
    if got.shape != expected.shape:
        raise Irv2Error(f"exported {fmt} gives output shape {got.shape}, expected {expected.shape}")
    diff = float(np.abs(got - expected).max())
    limit = TOLERANCE * max(1.0, float(np.abs(expected).max()))
    if not diff <= limit:
        raise Irv2Error(
            f"exported {fmt} differs from the network by {diff:.3g} (tolerance {limit:.3g}) "
            f"under {verified_with}; the export is wrong and was not written"
        )
    result["max_abs_diff"] = diff
    return result
