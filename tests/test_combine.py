from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from fastmask.cli import main
from fastmask.combine import combine, vote
from fastmask.errors import DataError
from fastmask.evaluate import evaluate

IDS = [f"{i:040x}.jpg" for i in (7, 3, 9, 1, 5)]


@pytest.fixture
def info(tmp_path: Path) -> Path:
    p = tmp_path / "info.csv"
    p.write_text("ImageID,ans\n" + "".join(f"{i},0\n" for i in IDS))
    return p


def write_probs(path: Path, ids: list[str], labels: list[int], k: int, prefix: str = "") -> Path:
    probs = np.full((len(ids), k), 0.1)
    probs[np.arange(len(ids)), labels] = 0.8
    frame = pd.DataFrame(probs, columns=[f"{prefix}p{j}" for j in range(k)])
    frame.insert(0, "ImageID", ids)
    frame.to_csv(path, index=False)
    return path


def test_combine_keeps_info_order_and_encodes(tmp_path: Path, info: Path):
    shuffled = IDS[::-1]  # prediction files may list rows in any order
    mask = write_probs(tmp_path / "m.csv", shuffled, [0, 1, 2, 0, 1], 3)
    gender = write_probs(tmp_path / "g.csv", shuffled, [1, 0, 1, 0, 1], 2)
    age = write_probs(tmp_path / "a.csv", shuffled, [2, 2, 0, 1, 0], 3)
    out = tmp_path / "sub.csv"
    assert main(["combine", "--mask", str(mask), "--gender", str(gender), "--age", str(age),
                 "--info", str(info), "--out", str(out)]) == 0  # fmt: skip
    sub = pd.read_csv(out)
    assert sub["ImageID"].tolist() == IDS
    # IDS[0] is shuffled[4]: mask 1, gender 1, age 0
    expect = {s: m * 6 + g * 3 + a for s, m, g, a in zip(shuffled, [0, 1, 2, 0, 1],
              [1, 0, 1, 0, 1], [2, 2, 0, 1, 0], strict=True)}  # fmt: skip
    assert sub["ans"].tolist() == [expect[i] for i in IDS]


def test_combine_multi_file(tmp_path: Path, info: Path):
    frame = pd.DataFrame({"ImageID": IDS})
    for task, k, lab in (("mask", 3, 2), ("gender", 2, 1), ("age", 3, 1)):
        for j in range(k):
            frame[f"{task}_p{j}"] = 0.9 if j == lab else 0.05
    frame.to_csv(tmp_path / "multi.csv", index=False)
    sub = combine(info, tmp_path / "s.csv", multi=tmp_path / "multi.csv")
    assert set(sub["ans"]) == {2 * 6 + 3 + 1}


@pytest.mark.parametrize(
    "ids, k, message",
    [
        (IDS[:4], 3, "have no prediction"),
        ([*IDS, IDS[0]], 3, "appears 2 times"),
        ([*IDS, "f" * 40 + ".jpg"], 3, "not in info.csv"),
        (IDS, 2, "need columns p0, p1, p2"),
        (IDS, 4, "need columns p0, p1, p2"),
    ],
)
def test_combine_refuses_bad_prediction_files(tmp_path: Path, info: Path, ids, k, message):
    bad = write_probs(tmp_path / "bad.csv", ids, [0] * len(ids), k)
    good_g = write_probs(tmp_path / "g.csv", IDS, [0] * 5, 2)
    good_a = write_probs(tmp_path / "a.csv", IDS, [0] * 5, 3)
    out = tmp_path / "sub.csv"
    out.write_text("previous content\n")
    with pytest.raises(DataError, match=message):
        combine(info, out, mask=bad, gender=good_g, age=good_a)
    assert out.read_text() == "previous content\n"  # nothing half-written
    assert not list(tmp_path.glob(".sub.csv*"))


def test_combine_refuses_non_numeric_and_missing_args(tmp_path: Path, info: Path):
    bad = write_probs(tmp_path / "m.csv", IDS, [0] * 5, 3)
    text = bad.read_text().replace("0.8", "oops", 1)
    bad.write_text(text)
    g = write_probs(tmp_path / "g.csv", IDS, [0] * 5, 2)
    a = write_probs(tmp_path / "a.csv", IDS, [0] * 5, 3)
    with pytest.raises(DataError, match="row 2 has a missing or non-numeric"):
        combine(info, tmp_path / "s.csv", mask=bad, gender=g, age=a)
    with pytest.raises(DataError, match="missing prediction file"):
        combine(info, tmp_path / "s.csv", mask=bad)
    assert main(["combine", "--mask", str(bad), "--info", str(info), "--out", "x.csv"]) == 2


def write_sub(path: Path, ans: list[int], ids: list[str] = IDS) -> Path:
    pd.DataFrame({"ImageID": ids, "ans": ans}).to_csv(path, index=False)
    return path


def test_vote_per_task_and_per_class_with_deterministic_ties(tmp_path: Path):
    # three files; row 0: classes 0, 0, 17 -> 0 either way
    # row 1: 3 (m0 g1 a0), 4 (m0 g1 a1), 1 (m0 g0 a1): per task -> m0 g1 a1 = 4; per class tie -> 3
    a = write_sub(tmp_path / "a.csv", [0, 3, 0, 0, 0])
    b = write_sub(tmp_path / "b.csv", [0, 4, 0, 0, 0])
    c = write_sub(tmp_path / "c.csv", [17, 1, 0, 0, 0])
    by_task = vote([a, b, c], tmp_path / "t.csv")
    assert by_task["ans"].tolist()[:2] == [0, 4]
    by_class = vote([a, b, c], tmp_path / "k.csv", by="class")
    assert by_class["ans"].tolist()[:2] == [0, 3]
    assert vote([b, a, c], tmp_path / "k2.csv", by="class")["ans"].tolist()[1] == 4
    assert main(["vote", str(a), str(b), str(c), "--out", str(tmp_path / "v.csv")]) == 0


def test_vote_refuses_mismatched_or_bad_files(tmp_path: Path):
    a = write_sub(tmp_path / "a.csv", [0] * 5)
    short = write_sub(tmp_path / "s.csv", [0] * 4, IDS[:4])
    wrong = write_sub(tmp_path / "w.csv", [0, 0, 18, 0, 0])
    with pytest.raises(DataError, match="have no prediction"):
        vote([a, short], tmp_path / "o.csv")
    with pytest.raises(DataError, match="ans '18', expected 0..17"):
        vote([a, wrong], tmp_path / "o.csv")
    with pytest.raises(DataError, match="at least two"):
        vote([a], tmp_path / "o.csv")


def test_evaluate_matches_sklearn(tmp_path: Path):
    rng = np.random.default_rng(0)
    ids = [f"{i:040x}.jpg" for i in range(400)]
    truth = rng.integers(0, 18, 400)
    truth[truth == 8] = 9  # one class absent from the truth ...
    pred = np.where(rng.random(400) < 0.6, truth, rng.integers(0, 18, 400))
    pred[pred == 14] = 13  # ... and one from the predictions
    t = write_sub(tmp_path / "t.csv", truth.tolist(), ids)
    p = write_sub(tmp_path / "p.csv", pred.tolist(), ids)
    r = evaluate(p, t, tmp_path / "ev")
    want = f1_score(truth, pred, average="macro", labels=range(18), zero_division=0)
    assert r["macro_f1"] == pytest.approx(want)
    assert r["accuracy"] == pytest.approx((truth == pred).mean())
    assert r["mask_macro_f1"] == pytest.approx(
        f1_score(truth // 6, pred // 6, average="macro", labels=range(3), zero_division=0)
    )
    saved = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    assert np.array(saved["confusion"]).sum() == 400
    assert (tmp_path / "ev" / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["evaluate", "--pred", str(p), "--truth", str(t)]) == 0


def test_evaluate_warns_when_the_truth_looks_like_the_placeholder_info_csv(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    placeholder = write_sub(tmp_path / "info.csv", [0] * 5)  # eval/info.csv: every ans 0
    pred = write_sub(tmp_path / "p.csv", [0, 3, 0, 7, 0])
    with caplog.at_level("WARNING"):
        evaluate(pred, placeholder)
    assert "placeholder" in caplog.text and "info.csv" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        evaluate(pred, write_sub(tmp_path / "t.csv", [0, 3, 1, 7, 0]))
    assert "placeholder" not in caplog.text


def test_combine_refuses_a_prediction_file_that_is_not_text(tmp_path: Path, info: Path, capsys):
    bad = tmp_path / "m.csv"
    bad.write_bytes(b"\xff\xfe\x00\x81 not a csv")
    g = write_probs(tmp_path / "g.csv", IDS, [0] * 5, 2)
    a = write_probs(tmp_path / "a.csv", IDS, [0] * 5, 3)
    with pytest.raises(DataError, match="cannot read prediction file .*m.csv"):
        combine(info, tmp_path / "s.csv", mask=bad, gender=g, age=a)
    args = ["--mask", str(bad), "--gender", str(g), "--age", str(a)]
    assert main(["combine", *args, "--info", str(info), "--out", str(tmp_path / "s.csv")]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_evaluate_out_that_is_a_file_is_a_clean_error(tmp_path: Path, capsys):
    t = write_sub(tmp_path / "t.csv", [0, 1, 2, 3, 4])
    taken = tmp_path / "ev"
    taken.write_text("not a folder\n")
    assert main(["evaluate", "--pred", str(t), "--truth", str(t), "--out", str(taken)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(taken) in err
    assert taken.read_text() == "not a folder\n"


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_combine_refuses_a_bias_that_is_not_a_finite_number(tmp_path: Path, info: Path, value):
    m = write_probs(tmp_path / "m.csv", IDS, [0, 1, 2, 0, 1], 3)
    g = write_probs(tmp_path / "g.csv", IDS, [1, 0, 1, 0, 1], 2)
    a = write_probs(tmp_path / "a.csv", IDS, [2, 2, 0, 1, 0], 3)
    bias = tmp_path / "bias.json"
    bias.write_text('{"bias": [' + ", ".join([value] + ["0"] * 17) + "]}")
    out = tmp_path / "sub.csv"
    args = ["--mask", str(m), "--gender", str(g), "--age", str(a), "--info", str(info)]
    assert main(["combine", *args, "--bias", str(bias), "--out", str(out)]) == 2
    assert not out.exists()  # NaN used to turn every answer into class 0, silently
    with pytest.raises(DataError, match="bias of class 0 is nan"):
        combine(info, out, mask=m, gender=g, age=a, bias=[float("nan")] + [0.0] * 17)


def test_id_checks_take_linear_time_on_the_competition_size():
    import time

    from fastmask.combine import check_ids

    ids = [f"{i:040x}.jpg" for i in range(12_600)]  # eval/info.csv of the competition
    start = time.perf_counter()
    check_ids("p.csv", ids[::-1], ids)
    assert time.perf_counter() - start < 2.0  # was 5 s a file: a set rebuilt for every id


def test_vote_and_evaluate_name_the_file_whose_ids_are_expected(tmp_path: Path):
    t = write_sub(tmp_path / "truth.csv", [0, 1, 2, 3, 4])
    short = write_sub(tmp_path / "short.csv", [0] * 4, IDS[:4])
    more = write_sub(tmp_path / "more.csv", [0] * 6, [*IDS, "f" * 40 + ".jpg"])
    with pytest.raises(DataError, match=r"short.csv: 1 ImageID\(s\) of .*truth.csv have no"):
        evaluate(short, t)
    with pytest.raises(DataError, match=r"more.csv: 1 ImageID\(s\) are not in .*truth.csv"):
        evaluate(more, t)
    with pytest.raises(DataError, match=r"short.csv: 1 ImageID\(s\) of .*truth.csv have no"):
        vote([t, short], tmp_path / "v.csv")
    blank = write_sub(tmp_path / "blank.csv", [0] * 5, ["", *IDS[1:]])
    with pytest.raises(DataError, match="blank.csv: row 2 has an empty ImageID ''"):
        vote([blank, t], tmp_path / "v.csv")


def test_combine_refuses_a_file_that_predict_recorded_for_another_task(tmp_path: Path, info: Path):
    m = write_probs(tmp_path / "m.csv", IDS, [0] * 5, 3)
    g = write_probs(tmp_path / "g.csv", IDS, [0] * 5, 2)
    a = write_probs(tmp_path / "a.csv", IDS, [0] * 5, 3)
    Path(f"{m}.json").write_text('{"task": "age"}')
    with pytest.raises(
        DataError, match=r"m.csv.json says .*m.csv holds predictions of an age model; .* --mask"
    ):
        combine(info, tmp_path / "s.csv", mask=m, gender=g, age=a)
    Path(f"{m}.json").write_text('{"task": "mask"}')
    Path(f"{a}.json").write_text("not json")  # unreadable: combine goes by the columns
    combine(info, tmp_path / "s.csv", mask=m, gender=g, age=a)
