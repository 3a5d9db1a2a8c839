"""export (TorchScript, ONNX) round trips and classify, on tiny runs trained once per module."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fastmask import _native, cli
from fastmask.classify import METADATA_KEY, classify, load_exported, read_metadata, sidecar_path
from fastmask.data import AGE_NAMES, GENDER_NAMES, MASK_NAMES, TASKS, encode_class, read_eval
from fastmask.errors import FastmaskError
from fastmask.export import EVAL_CROP, export_model
from fastmask.loader import PRESETS, REFERENCE_MEAN, REFERENCE_STD
from fastmask.predict import load_model, predict_probabilities

CPU = torch.device("cpu")
# TorchScript is the format under test; torch's deprecation notice for it is noise here.
pytestmark = pytest.mark.filterwarnings(r"ignore:.*torch\.jit:FutureWarning")


@pytest.fixture(scope="module")
def runs(tiny_runs: dict[str, Path]) -> dict[str, Path]:
    return tiny_runs


@pytest.fixture(scope="module")
def images(runs) -> list[str]:
    # info.csv's rows: the images folder also holds junk files like ._x.jpg.
    return read_eval(runs["data"])["path"].astype(str).tolist()[:6]


@pytest.fixture(scope="module")
def exported(runs, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("exported")
    out = {
        "multi_ts": export_model(runs["multi"], "torchscript", root / "multi.ts"),
        "multi_onnx": export_model(runs["multi"], "onnx", root / "multi.onnx"),
        "mask_onnx": export_model(runs["mask"], "onnx", root / "mask.onnx"),
    }
    # Through the CLI, to the default place beside the checkpoint.
    assert cli.main(["export", str(runs["gender"]), "--format", "torchscript"]) == 0
    out["gender_ts"] = runs["gender"] / "best.ts"
    return out


@pytest.mark.parametrize(
    ("name", "task"),
    [
        ("multi_ts", "multi"),
        ("multi_onnx", "multi"),
        ("mask_onnx", "mask"),
        ("gender_ts", "gender"),
    ],
)
def test_exported_model_matches_checkpoint(runs, exported, images, name: str, task: str):
    reference = predict_probabilities(
        load_model(runs[task] / "best.pt", CPU), images, device=CPU, threads=2
    )
    loaded = load_exported(exported[name], CPU)
    assert loaded.task == task
    got = predict_probabilities(loaded, images, device=CPU, threads=2)
    assert set(got) == set(reference)
    for head, p in reference.items():
        np.testing.assert_array_equal(got[head].argmax(1), p.argmax(1))
        np.testing.assert_allclose(got[head], p, atol=1e-4)


def test_sidecar_and_embedded_metadata(runs, exported):
    meta = read_metadata(exported["multi_ts"])
    checkpoint = torch.load(runs["multi"] / "best.pt", map_location="cpu", weights_only=True)
    assert meta["format_version"] == 1
    assert (meta["task"], meta["model_format"]) == ("multi", "torchscript")
    assert meta["model"] == "resnet18"
    assert meta["image_size"] == [48, 48]
    assert meta["augment"] == checkpoint["config"]["augment"] == "light"
    assert meta["crop"] == EVAL_CROP
    assert meta["mean"] == list(REFERENCE_MEAN) and meta["std"] == list(REFERENCE_STD)
    assert meta["outputs"] == ["mask", "gender", "age"]
    assert meta["label_maps"] == {
        "mask": list(MASK_NAMES), "gender": list(GENDER_NAMES), "age": list(AGE_NAMES)
    }  # fmt: skip
    assert meta["source"]["checkpoint"] == str((runs["multi"] / "best.pt").resolve())
    assert meta["source"]["config"] == json.loads(json.dumps(checkpoint["config"]))
    extra = {METADATA_KEY: ""}
    torch.jit.load(str(exported["multi_ts"]), _extra_files=extra)
    assert json.loads(extra[METADATA_KEY]) == meta

    import onnx

    proto = onnx.load(str(exported["mask_onnx"]))
    embedded = {p.key: p.value for p in proto.metadata_props}[METADATA_KEY]
    assert json.loads(embedded) == read_metadata(exported["mask_onnx"])
    assert json.loads(embedded)["outputs"] == ["mask"]
    assert [o.name for o in proto.graph.output] == ["mask"]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_torchscript_returns_a_tuple_for_any_batch_size(exported):
    module = torch.jit.load(str(exported["multi_ts"]))
    for n in (1, 5):
        out = module(torch.zeros(n, 3, 48, 48))
        assert isinstance(out, tuple)
        assert [tuple(o.shape) for o in out] == [(n, 3), (n, 2), (n, 3)]


def test_eval_crop_in_metadata_is_the_native_one():
    image = np.random.default_rng(0).integers(0, 256, (64, 40, 3), dtype=np.uint8)
    knobs = {k: tuple(v) if isinstance(v, list) else v for k, v in EVAL_CROP.items()}
    explicit = _native.augment_image(image, (24, 24), preset="none", knobs=knobs)
    for preset in PRESETS:
        np.testing.assert_array_equal(
            _native.augment_image(image, (24, 24), preset=preset), explicit
        )
    whole = _native.augment_image(image, (24, 24), knobs={"center_crop": (1.0, 1.0)})
    assert not np.array_equal(whole, explicit)  # the comparison can tell crops apart


def test_classify_one_multi_model_json(exported, images, capsys):
    args = ["classify", *images, "--model", str(exported["multi_onnx"]), "--json"]
    assert cli.main([*args, "--threads", "2"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["path"] for r in records] == images
    for r in records:
        picks = {h: list(r["probabilities"][h]).index(r[h]) for h in TASKS}
        assert r["class"] == encode_class(picks["mask"], picks["gender"], picks["age"])
        for h in TASKS:
            probs = r["probabilities"][h]
            assert r[h] == max(probs, key=probs.get)
            assert sum(probs.values()) == pytest.approx(1.0, abs=1e-5)
            assert r["confidence"][h] == probs[r[h]]


def test_classify_three_task_models_in_any_order(runs, exported, images, capsys):
    models = [str(runs["age"]), str(exported["mask_onnx"]), str(exported["gender_ts"])]
    assert cli.main(["classify", *images, "--model", *models, "--threads", "2", "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    names = {"mask": MASK_NAMES, "gender": GENDER_NAMES, "age": AGE_NAMES}
    for task in TASKS:
        probs = predict_probabilities(load_model(runs[task] / "best.pt", CPU), images, device=CPU)
        assert [r[task] for r in records] == [names[task][k] for k in probs[task].argmax(1)]
    assert cli.main(["classify", *images[:2], "--model", *models[::-1], "--threads", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(": ")[0] for line in lines] == images[:2]
    assert all(" mask " in line and " age " in line for line in lines)


def as_face_run(runs, tmp_path: Path, **config: object) -> tuple[Path, dict]:
    """The tiny multi run as if trained with `config` (e.g. crop="face"): its folder, ckpt."""
    ckpt = torch.load(runs["multi"] / "best.pt", map_location="cpu", weights_only=True)
    ckpt["config"] = {**ckpt["config"], **config}
    face_run = tmp_path / "face_run"
    face_run.mkdir()
    torch.save(ckpt, face_run / "best.pt")
    return face_run, ckpt


def classify_records(face_run: Path, images: list[str], capsys) -> list[dict]:
    """`classify --json` of the images with the run's model, faces by mtcnn."""
    argv = ["classify", *images, "--model", str(face_run), "--threads", "2", "--json"]
    assert cli.main([*argv, "--detector", "mtcnn"]) == 0
    return json.loads(capsys.readouterr().out)


def assert_probabilities(records: list[dict], probs: dict, atol: float) -> None:
    for i, r in enumerate(records):
        for head in TASKS:
            got = list(r["probabilities"][head].values())
            np.testing.assert_allclose(got, probs[head][i], rtol=0, atol=atol)


def test_classify_feeds_a_face_crop_model_the_faces_its_detector_finds(
    runs, images, tmp_path: Path, capsys
):
    from fastmask.crops import boxes_from_faces, face_detector
    from fastmask.faces import detect_paths
    from fastmask.faces.cache import as_written

    # The tiny multi run as if trained with --crop face: classify must frame images as
    # predict does (face box grown by the margin), not with the centre crop.
    face_run, ckpt = as_face_run(runs, tmp_path, crop="face", face_margin=0.2)
    # As faces.csv keeps them (0.1 pixel), which is what predict crops to.
    faces = [as_written(f) for f in detect_paths(images, "mtcnn")]
    assert any(f is not None for f in faces), "some synthetic faces should be found"
    boxes = boxes_from_faces("face", 0.2, faces)
    model = load_model(face_run / "best.pt", CPU)
    framed = predict_probabilities(model, images, device=CPU, threads=2, crop_boxes=boxes)
    centre = predict_probabilities(model, images, device=CPU, threads=2)
    assert not np.allclose(framed["age"], centre["age"], atol=1e-4)  # the framing matters

    records = classify_records(face_run, images, capsys)
    assert_probabilities(records, framed, atol=1e-5)
    assert [r["face"] is None for r in records] == [f is None for f in faces]

    # The detector comes from the run's faces file record, and travels in the export.
    record = tmp_path / "faces.csv.json"
    record.write_text(json.dumps({"detector": {"name": "haar-eyes"}}))
    assert face_detector({**ckpt["config"], "faces": str(tmp_path / "faces.csv")}) == "haar-eyes"
    assert face_detector(ckpt["config"]) == "mtcnn"  # no record: the default
    exported = export_model(face_run, "torchscript", tmp_path / "face.ts")
    face_crop = read_metadata(exported)["face_crop"]
    assert face_crop == {"margin": 0.2, "aligned": False, "detector": "mtcnn"}
    assert load_exported(exported, CPU).face_detector == "mtcnn"


def test_classify_frames_faces_exactly_as_predict_does_from_faces_csv(
    runs, images, tmp_path: Path, capsys
):
    from fastmask.crops import face_crop_boxes
    from fastmask.faces import detect_paths
    from fastmask.faces.cache import face_rows
    from fastmask.train import TrainConfig

    # faces.csv keeps boxes to 0.1 pixel; classify framed the detector's unrounded boxes, so
    # the same model gave other probabilities for the same image than predict (1e-3 here).
    faces_file = tmp_path / "faces.csv"
    face_rows(images, detect_paths(images, "mtcnn")).to_csv(faces_file, index=False)
    face_run, ckpt = as_face_run(runs, tmp_path, crop="face-aligned", faces=str(faces_file))
    boxes = face_crop_boxes(TrainConfig.from_json(ckpt["config"]), images)
    assert boxes is not None and any(b is not None for b in boxes)
    model = load_model(face_run / "best.pt", CPU)
    predicted = predict_probabilities(model, images, device=CPU, threads=2, crop_boxes=boxes)
    assert_probabilities(classify_records(face_run, images, capsys), predicted, atol=1e-6)


def test_classify_detector_says_when_no_model_uses_it(exported, images, caplog, capsys):
    # --detector was silently ignored when no model crops to faces.
    argv = ["classify", images[0], "--model", str(exported["multi_ts"]), "--threads", "2"]
    assert cli.main([*argv, "--detector", "haar"]) == 0
    assert "--detector haar: no model here was trained on face crops" in caplog.text
    assert "no face found" not in capsys.readouterr().out


def test_classify_refuses_incomplete_or_duplicate_model_sets(runs, exported, images):
    with pytest.raises(FastmaskError, match="two age models"):
        classify(images, [runs["age"], exported["mask_onnx"], runs["age"]], threads=2)
    with pytest.raises(FastmaskError, match="no gender model"):
        classify(images, [runs["age"], exported["mask_onnx"]], threads=2)
    with pytest.raises(FastmaskError, match="pass it alone"):
        classify(images, [exported["multi_ts"], runs["age"]], threads=2)


def test_classify_corrupt_image_is_a_clean_error(exported, images, tmp_path: Path, capsys):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    args = ["classify", images[0], str(bad), "--model", str(exported["multi_ts"])]
    assert cli.main([*args, "--threads", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "broken.jpg" in err


def test_export_refusals(runs, exported, monkeypatch, tmp_path: Path):
    with pytest.raises(FastmaskError, match="checkpoint itself"):
        export_model(runs["mask"], "torchscript", runs["mask"] / "best.pt")
    stale = tmp_path / "old.onnx"
    stale.write_bytes(exported["mask_onnx"].read_bytes())
    meta = read_metadata(exported["mask_onnx"])
    sidecar_path(stale).write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(FastmaskError, match="export format 99"):
        load_exported(stale, CPU)
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else real(name, *a)
    )
    with pytest.raises(FastmaskError, match=r"pip install 'fastmask\[onnx\]'"):
        export_model(runs["mask"], "onnx", tmp_path / "x.onnx")


def test_corrupt_exported_file_is_a_clean_error(exported, images, tmp_path: Path, capsys):
    cut = tmp_path / "cut.ts"
    cut.write_bytes(exported["multi_ts"].read_bytes()[:3000])
    sidecar_path(cut).write_bytes(sidecar_path(exported["multi_ts"]).read_bytes())
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    for bad in (cut, junk):
        with pytest.raises(FastmaskError, match=f"cannot load .*{bad.name}"):
            load_exported(bad, CPU)
        assert cli.main(["classify", images[0], "--model", str(bad), "--threads", "2"]) == 2
        assert capsys.readouterr().err.startswith("error: ")
