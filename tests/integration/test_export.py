"""export: MINDIR and ONNX files that reload and reproduce the network; AIR refused off Ascend."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from support.images import make_image

import irv2_core  # noqa: F401  (oneDNN setting before any op)
from irv2_core.cli import main
from irv2_core.data.transforms import preprocess_image
from irv2_core.errors import Irv2Error
from irv2_core.export.exporter import export_model
from irv2_core.export.predict import predict, softmax
from irv2_core.runtime.io import FILE_MODE, sha256_file

SIZE = 75


pytestmark = pytest.mark.usefixtures("pynative_mode")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """A 5-class checkpoint with non-trivial BN statistics (as after training)."""
    import mindspore as ms

    from irv2_core.models.factory import create_model
    from irv2_core.models.weights import save_checkpoint_atomic

    net = create_model(num_classes=5)
    rng = np.random.default_rng(3)
    for p in net.get_parameters():
        if p.name.endswith(("moving_mean", "beta")):
            p.set_data(ms.Tensor(rng.normal(0, 0.1, p.shape).astype(np.float32)))
        elif p.name.endswith("moving_variance"):
            p.set_data(ms.Tensor(rng.uniform(0.5, 1.5, p.shape).astype(np.float32)))
    return save_checkpoint_atomic(net, tmp_path_factory.mktemp("ckpt") / "final.ckpt")


@pytest.fixture(scope="module")
def reference(ckpt):
    """The checkpoint's network as a function: NCHW uint8 pixel batch -> logits."""
    import mindspore as ms

    from irv2_core.models.weights import load_model

    net, _ = load_model(ckpt)
    return lambda x: net(ms.Tensor(x)).asnumpy()


def _assert_predict_agrees(model: Path, reference, tmp_path: Path) -> None:
    """`predict` with the exported file gives the checkpoint's classes and probabilities."""
    rng = np.random.default_rng(5)
    images = []
    for i in range(2):
        images.append(tmp_path / f"img{i}.jpg")
        make_image(i, rng).save(images[-1], quality=90)
    size = None if model.suffix == ".onnx" else SIZE
    got = predict(model, images, top_k=3, image_size=size)
    want = softmax(reference(np.stack([preprocess_image(p, "zoo", SIZE) for p in images])))
    for item, row in zip(got, want, strict=True):
        best = np.argsort(-row)[:3]
        assert [e["index"] for e in item["top"]] == best.tolist()
        np.testing.assert_allclose([e["probability"] for e in item["top"]], row[best], atol=1e-5)


@pytest.mark.slow
def test_mindir_round_trip_with_dynamic_batch(ckpt, reference, tmp_path):
    import mindspore as ms
    from mindspore import nn

    out_dir = tmp_path / "exports"
    out_dir.mkdir()
    folder_mode = out_dir.stat().st_mode
    result = export_model(ckpt, "mindir", out_dir / "irv2", image_size=SIZE)
    path = out_dir / "irv2.mindir"
    assert result.path == str(path) and result.format == "MINDIR"
    assert result.verified_with == "mindspore.GraphCell" and result.max_abs_diff <= 1e-4
    assert result.num_classes == 5 and result.batch == "dynamic"
    assert result.sha256 == sha256_file(path) and result.bytes == path.stat().st_size
    # no temp leftovers; the input contract sits beside the export (issue 12)
    assert sorted(p.name for p in out_dir.iterdir()) == ["irv2.mindir", "irv2.mindir.json"]
    contract = json.loads((out_dir / "irv2.mindir.json").read_text())
    assert contract == result.input_contract and contract["dtype"] == "uint8"
    assert contract["protocol"] == "zoo" and contract["shape"] == [None, 3, SIZE, SIZE]
    # readable like any other output (MindSpore alone leaves 0400 and chmods the folder 0700)
    assert path.stat().st_mode & 0o777 == FILE_MODE
    assert out_dir.stat().st_mode == folder_mode
    x = np.random.default_rng(11).integers(0, 256, (3, 3, SIZE, SIZE), dtype=np.uint8)
    got = nn.GraphCell(ms.load(str(path)))(ms.Tensor(x)).asnumpy()
    np.testing.assert_allclose(got, reference(x), atol=1e-4)
    _assert_predict_agrees(path, reference, tmp_path)


@pytest.mark.slow
def test_onnx_matches_mindspore_under_onnxruntime(ckpt, reference, tmp_path):
    """Guards the exporter's silent 4-tuple padding bug: outputs must match, not just run."""
    import onnxruntime as ort

    assert main(["export", "--ckpt", str(ckpt), "--format", "onnx", "--out",
                 str(tmp_path / "m.onnx"), "--image-size", str(SIZE)]) == 0  # fmt: skip
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [1, 3, SIZE, SIZE]  # static batch of 1
    assert session.get_inputs()[0].type == "tensor(uint8)"  # pixels in, normalised inside
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["irv2.input_contract"])["protocol"] == "zoo"
    x = np.random.default_rng(12).integers(0, 256, (1, 3, SIZE, SIZE), dtype=np.uint8)
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(got, reference(x), atol=1e-4)
    _assert_predict_agrees(
        tmp_path / "m.onnx", reference, tmp_path
    )  # image size read from the file


@pytest.mark.slow
def test_an_export_that_differs_from_the_network_is_refused_and_not_written(
    ckpt, tmp_path, monkeypatch
):
    """The verification guard: an exporter that writes a wrong file (here: the classifier's bias
    shifted by 0.05 in the written ONNX, so one logit is off by exactly that) makes the export
    fail with the measured difference, and nothing that looks like an export is left."""
    import onnx
    from onnx import numpy_helper

    from irv2_core.export import exporter

    shift = 0.05  # well above the 1e-3 tolerance for logits of this untrained net's scale
    real_export = exporter._ms_export

    def wrong_export(net, fmt, image_size, tmp_base):
        written = real_export(net, fmt, image_size, tmp_base)
        model = onnx.load(str(written))
        (bias,) = [t for t in model.graph.initializer if list(t.dims) == [5]]  # classifier bias
        values = numpy_helper.to_array(bias).copy()
        values[2] += shift
        bias.CopyFrom(numpy_helper.from_array(values, bias.name))
        os.chmod(written, 0o600)  # MindSpore wrote it 0400
        onnx.save(model, str(written))
        return written

    monkeypatch.setattr(exporter, "_ms_export", wrong_export)
    out_dir = tmp_path / "exports"
    out_dir.mkdir()
    with pytest.raises(Irv2Error) as exc:
        export_model(ckpt, "ONNX", out_dir / "irv2", image_size=SIZE)
    text = str(exc.value)
    match = re.search(r"exported ONNX differs from the network by (\S+) \(tolerance (\S+)\)", text)
    assert match, text
    assert float(match[1]) == pytest.approx(shift, rel=0.02) and float(match[2]) < shift / 5
    assert "under onnxruntime" in text and "the export is wrong and was not written" in text
    # neither the export, nor its temp file, nor its input contract
    assert list(out_dir.iterdir()) == []


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


def test_export_helpers_restore_the_callers_mode_and_cache_setting(monkeypatch):
    import mindspore as ms

    from irv2_core.runtime.context import compile_cache_disabled, pynative_mode

    mode = ms.get_context("mode")
    monkeypatch.setenv("MS_COMPILER_CACHE_ENABLE", "1")
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        with compile_cache_disabled(), pynative_mode():
            assert ms.get_context("mode") == ms.PYNATIVE_MODE
            assert os.environ["MS_COMPILER_CACHE_ENABLE"] == "0"  # read at every compile
        assert ms.get_context("mode") == ms.GRAPH_MODE
        assert os.environ["MS_COMPILER_CACHE_ENABLE"] == "1"
    finally:
        ms.set_context(mode=mode)
    assert ms.get_context("enable_compile_cache") is None  # the deprecated context API unused


@pytest.mark.slow
def test_onnx_export_emits_no_deprecation_warning(ckpt, tmp_path):
    """MindSpore 2.10 deprecates ms.export(file_format='ONNX') and set_context(
    enable_compile_cache=...): its Python logger warns on stderr (the tests' GLOG_v=3 hides it,
    so the logger is opened to WARNING here), and Python warnings are recorded too."""
    import logging
    import warnings

    from mindspore import log as ms_log

    logger = ms_log._get_logger()
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    level = logger.level
    logger.setLevel(logging.WARNING)
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ms_log.warning("control: this API is deprecated")  # the capture itself works
            result = export_model(ckpt, "ONNX", tmp_path / "m.onnx", image_size=SIZE)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert result.verified_with.startswith("onnxruntime")
    messages = [r.getMessage() for r in records] + [str(w.message) for w in caught]
    assert messages[0] == "control: this API is deprecated"
    stale = [m for m in messages[1:] if re.search(r"deprecat|will be (deleted|removed)", m, re.I)]
    assert not stale, stale
    kinds = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)
    assert not [str(w.message) for w in caught if issubclass(w.category, kinds)]
