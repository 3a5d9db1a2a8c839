from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fastmask import cli
from fastmask.errors import FastmaskError
from fastmask.report import find_runs, worst_predictions, write_report

CLASSES = ["wear", "incorrect", "not_wear"]
PNG = b"\x89PNG\r\n\x1a\n"


def fake_run(folder: Path, f1: list[float], seed: int = 0) -> Path:
    """A run folder as `train` writes it, without training: metrics, summary, predictions."""
    folder.mkdir(parents=True)
    epochs = np.arange(1, len(f1) + 1)
    pd.DataFrame(
        {
            "epoch": epochs,
            "phase": "train",
            "train_loss": 1.0 / epochs,
            "val_loss": 1.2 / epochs,
            "val_macro_f1": f1,
            "val_acc": f1,
        }
    ).to_csv(folder / "metrics.csv", index=False)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(12):
        path = folder / f"img{i}.jpg"
        Image.fromarray(np.full((64, 48, 3), 20 * i, np.uint8)).save(path)
        true = i % 3
        pred = true if i < 6 else (true + 1) % 3
        rows.append(
            {
                "path": str(path),
                "person": f"{i:06d}_male_Asian_30",
                "true": true,
                "pred": pred,
                "true_name": CLASSES[true],
                "pred_name": CLASSES[pred],
                "confidence": float(rng.uniform(0.4, 1.0)),
            }
        )
    pd.DataFrame(rows).to_csv(folder / "val_predictions.csv", index=False)
    best = int(np.argmax(f1))
    summary = {
        "task": "mask",
        "classes": CLASSES,
        "best_epoch": best + 1,
        "best_macro_f1": f1[best],
        "per_class_f1": dict(zip(CLASSES, [0.9, 0.5, 0.7], strict=True)),
    }
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def test_report_writes_every_figure(tmp_path: Path) -> None:
    a = fake_run(tmp_path / "a", [0.3, 0.6, 0.7])
    b = fake_run(tmp_path / "b", [0.2, 0.5], seed=1)
    written = write_report([a, b], tmp_path / "out")
    names = sorted(p.name for p in written)
    assert names == sorted(
        ["curves.png"]
        + [f"{r}_{kind}.png" for r in ("a", "b") for kind in ("per_class_f1", "confusion", "worst")]
    )
    for path in written:
        assert path.read_bytes()[:8] == PNG


def test_worst_are_misclassified_most_confident_first(tmp_path: Path) -> None:
    preds = pd.read_csv(fake_run(tmp_path / "a", [0.5]) / "val_predictions.csv")
    worst = worst_predictions(preds, 4)
    assert len(worst) == 4 and (worst["true"] != worst["pred"]).all()
    assert list(worst["confidence"]) == sorted(worst["confidence"], reverse=True)
    assert (
        worst["confidence"].min()
        >= preds[preds["true"] != preds["pred"]]["confidence"].nlargest(4).min()
    )


def test_folds_folder_expands_and_bad_folder_is_refused(tmp_path: Path) -> None:
    for i in (0, 1, 10):
        fake_run(tmp_path / "cv" / f"fold{i}", [0.5, 0.6])
    assert [p.name for p in find_runs([tmp_path / "cv"])] == ["fold0", "fold1", "fold10"]
    with pytest.raises(FastmaskError, match="not a run folder"):
        find_runs([tmp_path])


def test_report_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = fake_run(tmp_path / "run", [0.4, 0.8])
    assert cli.main(["report", str(run), "--out", str(tmp_path / "figs"), "--worst", "4"]) == 0
    printed = capsys.readouterr().out.split()
    assert str(tmp_path / "figs" / "curves.png") in printed
    assert (tmp_path / "figs" / "run_worst.png").exists()


@pytest.mark.parametrize(
    "name, text, column",
    [
        ("metrics.csv", "epoch,phase\n1,train\n", "train_loss"),
        ("metrics.csv", "garbage\n", "epoch"),
        ("val_predictions.csv", "path,person\nx.jpg,p\n", "true"),
    ],
)
def test_report_refuses_run_files_without_their_columns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, text: str, column: str
) -> None:
    run = fake_run(tmp_path / "run", [0.4, 0.6])
    (run / name).write_text(text)
    with pytest.raises(FastmaskError, match=rf"{name}.*{column}"):
        write_report([run], tmp_path / "out")
    assert cli.main(["report", str(run), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_report_out_that_is_a_file_is_a_clean_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = fake_run(tmp_path / "run", [0.4, 0.6])
    taken = tmp_path / "out"
    taken.write_text("x\n")
    assert cli.main(["report", str(run), "--out", str(taken)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(taken) in err


def test_fold_runs_of_two_jobs_get_figures_of_their_own(tmp_path: Path) -> None:
    # jobs/a/multi/fold0 and jobs/b/multi/fold0: "multi-fold0" twice would overwrite a's files.
    for job in ("a", "b"):
        for i in (0, 1):
            fake_run(tmp_path / job / "multi" / f"fold{i}", [0.4, 0.6], seed=i)
    written = write_report([tmp_path / "a" / "multi", tmp_path / "b" / "multi"], tmp_path / "out")
    names = [p.name for p in written]
    assert len(names) == len(set(names)) == 1 + 4 * 3
    assert "a-multi-fold0_confusion.png" in names and "b-multi-fold0_confusion.png" in names


def test_worst_zero_does_not_claim_there_are_no_mistakes(tmp_path: Path, monkeypatch) -> None:
    import matplotlib.figure

    titles: list[str] = []
    real = matplotlib.figure.Figure.suptitle
    monkeypatch.setattr(
        matplotlib.figure.Figure,
        "suptitle",
        lambda self, t, **kw: titles.append(t) or real(self, t, **kw),
    )
    run = fake_run(tmp_path / "run", [0.4, 0.6])  # 6 of its 12 images are misclassified
    write_report([run], tmp_path / "out", worst=0)
    assert not any("no misclassified" in t for t in titles), titles
    assert any("0 of 6 misclassified" in t for t in titles), titles


@pytest.mark.parametrize("name", ["exif_1.jpg", "exif_6.jpg", "exif_8.jpg"])
def test_figures_show_images_upright_as_the_loader_trains_on_them(name: str):
    # report's worst images and suspects' sheets drew the stored pixels: a phone photo
    # tagged "rotate 90" lay on its side while the loader (and eda) turned it upright.
    from fastmask.loader import decode
    from fastmask.plots import upright_thumbnail

    path = Path(__file__).parent / "data" / name
    upright = decode(path)
    thumb = upright_thumbnail(path, (256, 256))
    assert thumb.shape == upright.shape
    assert np.abs(thumb.astype(int) - upright.astype(int)).mean() < 8


def test_an_unreadable_image_is_an_oserror_for_the_figures(tmp_path: Path):
    from fastmask.plots import upright_thumbnail

    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff truncated")
    with pytest.raises(OSError):
        upright_thumbnail(bad, (64, 64))
