"""export: MINDIR and ONNX files that reload and reproduce the network; AIR refused off Ascend."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import irv2_core  # noqa: F401  (oneDNN setting before any op)
from irv2_core.cli import main
from irv2_core.errors import Irv2Error
from irv2_core.export import export_model
from irv2_core.io import sha256_file

SIZE = 75


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """A 5-class checkpoint with non-trivial BN statistics (as after training)."""
    import mindspore as ms

    from irv2_core.models import create_model
    from irv2_core.weights import save_checkpoint_atomic

    net = create_model(num_classes=5)
    rng = np.random.default_rng(3)
    for p in net.get_parameters():
        if p.name.endswith(("moving_mean", "beta")):
            p.set_data(ms.Tensor(rng.normal(0, 0.1, p.shape).astype(np.float32)))
        elif p.name.endswith("moving_variance"):
            p.set_data(ms.Tensor(rng.uniform(0.5, 1.5, p.shape).astype(np.float32)))
    return save_checkpoint_atomic(net, tmp_path_factory.mktemp("ckpt") / "final.ckpt")


def _reference(ckpt: Path, x: np.ndarray) -> np.ndarray:
    import mindspore as ms

    from irv2_core.weights import load_model

    net, _ = load_model(ckpt)
    return net(ms.Tensor(x)).asnumpy()


@pytest.mark.slow
def test_mindir_round_trip_with_dynamic_batch(ckpt, tmp_path):
    import mindspore as ms
    from mindspore import nn

    result = export_model(ckpt, "mindir", tmp_path / "irv2", image_size=SIZE)
    path = tmp_path / "irv2.mindir"
    assert result["path"] == str(path) and result["format"] == "MINDIR"
    assert result["verified_with"] == "mindspore.GraphCell" and result["max_abs_diff"] <= 1e-4
    assert result["num_classes"] == 5 and result["batch"] == "dynamic"
    assert result["sha256"] == sha256_file(path) and result["bytes"] == path.stat().st_size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["irv2.mindir"]  # no temp leftovers
    x = np.random.default_rng(11).standard_normal((3, 3, SIZE, SIZE)).astype(np.float32)
    got = nn.GraphCell(ms.load(str(path)))(ms.Tensor(x)).asnumpy()
    np.testing.assert_allclose(got, _reference(ckpt, x), atol=1e-4)


@pytest.mark.slow
def test_onnx_matches_mindspore_under_onnxruntime(ckpt, tmp_path):
    """Guards the exporter's silent 4-tuple padding bug: outputs must match, not just run."""
    import onnxruntime as ort

    assert main(["export", "--ckpt", str(ckpt), "--format", "onnx", "--out",
                 str(tmp_path / "m.onnx"), "--image-size", str(SIZE)]) == 0  # fmt: skip
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [1, 3, SIZE, SIZE]  # static batch of 1
    x = np.random.default_rng(12).standard_normal((1, 3, SIZE, SIZE)).astype(np.float32)
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(got, _reference(ckpt, x), atol=1e-4)


def test_air_needs_ascend_and_writes_nothing(ckpt, tmp_path, capsys):
    assert (
        main(["export", "--ckpt", str(ckpt), "--format", "AIR", "--out", str(tmp_path / "m")]) == 2
    )
    assert "AIR export needs an Ascend device (device_target Ascend with CANN)" in (
        capsys.readouterr().err
    )
    assert list(tmp_path.iterdir()) == []


def test_bad_requests_fail_before_exporting(ckpt, tmp_path):
    with pytest.raises(Irv2Error, match="unknown export format 'TFLITE'"):
        export_model(ckpt, "tflite", tmp_path / "m")
    with pytest.raises(Irv2Error, match="at least 75x75"):
        export_model(ckpt, "ONNX", tmp_path / "m", image_size=64)
    with pytest.raises(Irv2Error, match="5-class classifier but num_classes=1000"):
        export_model(ckpt, "ONNX", tmp_path / "m", num_classes=1000, image_size=SIZE)
    with pytest.raises(Irv2Error, match="checkpoint not found"):
        export_model(tmp_path / "missing.ckpt", "MINDIR", tmp_path / "m")
    assert list(tmp_path.iterdir()) == []
