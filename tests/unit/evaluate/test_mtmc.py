"""AI City MTMC scoring: hand-checkable scenes in the MTMC text format."""

from __future__ import annotations

import argparse
import json

import pytest

from reidd.evaluate.mtmc import MTMCFormatError, evaluate_mtmc, read_mtmc, register


CAMS = ["c001", "c002", "c003"]


IDS = [1, 2, 3, 4]


L = 10  # boxes per identity per camera


def scene() -> list[list]:
    """4 vehicles driving through 3 cameras in order; every vehicle has L boxes per camera."""
    rows = []
    for ci, cam in enumerate(CAMS):
        for oid in IDS:
            for k in range(L):
                f = ci * 50 + oid * 3 + k
                rows.append([cam, oid, f, 100.0 * oid, 50.0 + 2 * k, 60.0, 40.0])
    return rows


def write(path, rows) -> str:
    path.write_text("".join(f"{c} {o} {f} {x} {y} {w} {h} -1 -1\n" for c, o, f, x, y, w, h in rows))
    return str(path)


def test_perfect_prediction(tmp_path):
    gt = write(tmp_path / "gt.txt", scene())
    res = evaluate_mtmc(gt, write(tmp_path / "pred.txt", scene()))
    assert res["idf1"] == 1.0 and res["mota"] == 1.0 and res["precision"] == 1.0 and res["recall"] == 1.0
    assert res["num_switches"] == 0 and res["num_objects"] == len(CAMS) * len(IDS) * L
    assert res["transitions_total"] == len(IDS) * (len(CAMS) - 1) == res["transitions_correct"]
    assert res["transition_accuracy"] == 1.0 and res["false_merges"] == 0
    assert res["mean_match_iou"] == pytest.approx(1.0) and res["num_cameras"] == 3
    assert set(res["per_camera"]) == set(CAMS) and all(m["idf1"] == 1.0 for m in res["per_camera"].values())


def test_swapped_ids_in_one_camera(tmp_path):
    swap = {1: 2, 2: 1}
    pred = [[c, swap.get(o, o) if c == "c003" else o, *rest] for c, o, *rest in scene()]
    res = evaluate_mtmc(write(tmp_path / "gt.txt", scene()), write(tmp_path / "pred.txt", pred))
    # vehicles 1 and 2 each lose their c002 -> c003 transition: 6 of 8 correct
    assert (res["transitions_correct"], res["transitions_total"]) == (6, 8)
    assert res["transition_accuracy"] == pytest.approx(0.75)
    # predicted ids 1 and 2 each cover two different vehicles across cameras
    assert res["false_merges"] == 2 and res["false_merge_ids"] == [1, 2]
    # best global id mapping keeps 1->1, 2->2: the c003 boxes of vehicles 1, 2 (2L of 12L) are ID errors
    assert res["idf1"] == pytest.approx(10 / 12) and res["num_switches"] == 2
    assert res["mota"] == pytest.approx(1 - 2 / (12 * L)) and res["precision"] == 1.0
    assert res["per_camera"]["c003"]["idf1"] == 1.0  # within one camera the swap is invisible


def test_merged_identities_count_a_false_merge(tmp_path):
    one_cam_each = [r for r in scene() if (r[1], r[0]) in ((1, "c001"), (2, "c002"))]
    glued = [[c, 5, *rest] for c, _o, *rest in one_cam_each]  # both vehicles get global id 5
    res = evaluate_mtmc(write(tmp_path / "gt.txt", one_cam_each), write(tmp_path / "pred.txt", glued))
    assert res["false_merges"] == 1 and res["false_merge_ids"] == [5]
    assert res["transitions_total"] == 0 and res["idf1"] == pytest.approx(0.5)

    gt = [r for r in scene() if r[1] in (1, 2) and (r[1] == 1 or r[0] == "c003")]  # 1: c001..c003, 2: c003 only
    pred = [[c, 7, *rest] if o == 1 and c != "c003" else [c, 7 if o == 2 else 9, *rest] for c, o, *rest in gt]
    # id 7 = vehicle 1 in c001/c002 and vehicle 2 in c003; vehicle 1 in c003 gets id 9
    res = evaluate_mtmc(write(tmp_path / "gt.txt", gt), write(tmp_path / "pred.txt", pred))
    assert res["false_merges"] == 1 and res["false_merge_ids"] == [7]
    assert (res["transitions_correct"], res["transitions_total"]) == (1, 2)  # c001->c002 ok, c002->c003 not


def test_jitter_keeps_scores_and_shifts_lower_them(tmp_path):
    gt = write(tmp_path / "gt.txt", scene())
    # a 60x40 box moved 5 px sideways and 3 px down: IoU = 55*37 / (2*2400 - 55*37) = 0.736 >= 0.5
    jitter = [[c, o, f, x + (5 if f % 2 else -5), y + 3, w, h] for c, o, f, x, y, w, h in scene()]
    res = evaluate_mtmc(gt, write(tmp_path / "jit.txt", jitter))
    assert res["idf1"] == 1.0 and res["mota"] == 1.0 and res["transition_accuracy"] == 1.0
    assert res["mean_match_iou"] < 0.9
    # 30 px shift in c002: IoU = 30*40 / (4800 - 1200) = 1/3 < 0.5 -> every c002 box is a miss and a false positive
    shifted = [[c, o, f, x + (30 if c == "c002" else 0), y, w, h] for c, o, f, x, y, w, h in scene()]
    res = evaluate_mtmc(gt, write(tmp_path / "shift.txt", shifted))
    assert res["recall"] == pytest.approx(2 / 3) and res["precision"] == pytest.approx(2 / 3)
    assert res["mota"] == pytest.approx(1 - 2 * (1 / 3)) and res["idf1"] == pytest.approx(2 / 3)
    assert res["transitions_correct"] == 0 and res["transitions_total"] == 8
    # with a looser threshold the shifted boxes match again
    assert evaluate_mtmc(gt, str(tmp_path / "shift.txt"), iou=0.3)["mota"] == 1.0


def test_hand_computed_single_camera(tmp_path):
    box = {1: (10.0, 10.0, 50.0, 30.0), 2: (200.0, 10.0, 50.0, 30.0)}
    gt = [["c001", o, f, *box[o]] for o in (1, 2) for f in (1, 2, 3, 4)]
    pred = [["c001", 10, f, *box[1]] for f in (1, 2, 3, 4)]
    pred += [["c001", 20, 1, *box[2]], ["c001", 20, 2, *box[2]], ["c001", 30, 3, *box[2]]]  # switch at f3, miss f4
    pred += [["c001", 40, 2, 400.0, 300.0, 50.0, 30.0]]  # a false positive
    res = evaluate_mtmc(write(tmp_path / "gt.txt", gt), write(tmp_path / "pred.txt", pred))
    # 8 GT, 8 predicted boxes; 7 matched (6 + 1 that is an id switch), 1 miss, 1 FP
    assert (res["num_matches"], res["num_switches"], res["num_misses"], res["num_false_positives"]) == (6, 1, 1, 1)
    assert res["mota"] == pytest.approx(1 - 3 / 8)
    assert res["precision"] == pytest.approx(7 / 8) and res["recall"] == pytest.approx(7 / 8)
    # best id mapping 1->10 (4 boxes), 2->20 (2 boxes): IDTP 6 of 8 GT / 8 predicted
    assert res["idtp"] == 6 and res["idf1"] == pytest.approx(0.75) and res["idp"] == pytest.approx(0.75)
    assert res["transitions_total"] == 0 and res["transition_accuracy"] is None


def test_camera_ids_as_ints_or_strings(tmp_path):
    gt = write(tmp_path / "gt.txt", [[str(int(c[1:])), *rest] for c, *rest in scene()])  # "1", "2", "3"
    pred = write(tmp_path / "pred.txt", scene())  # "c001", ...
    res = evaluate_mtmc(gt, pred)
    assert res["idf1"] == 1.0 and res["num_cameras"] == 3
    assert set(read_mtmc(gt)["camera"]) == set(CAMS)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("c001 1 7 10 10 5", "got 6 field"),
        ("c001 1 x 10 10 5 5 -1 -1", "frame_id"),
        ("c001 1.5 7 10 10 5 5 -1 -1", "obj_id"),
        ("c001 1 7 10 10 0 5 -1 -1", "width and height"),
        ("c001 1 7 10 nan 5 5 -1 -1", "ymin"),
        ("c001 1 3 10 10 5 5 -1 -1", "appears twice"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad.txt"
    path.write_text("# comment\nc001 1 3 10 10 5 5 -1 -1\n\n" + line + "\n")
    with pytest.raises(MTMCFormatError, match=rf"bad\.txt:4: .*{message}"):
        read_mtmc(path)


def test_cli_table_json_and_errors(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="cmd"))
    gt = write(tmp_path / "gt.txt", scene())
    out = tmp_path / "res" / "scores.json"
    args = parser.parse_args(["eval-mtmc", "--gt", gt, "--pred", gt, "--json", str(out)])
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "IDF1" in text and "100.00%" in text and "8 / 8 correct" in text and "c003" in text
    assert json.loads(out.read_text())["idf1"] == 1.0
    (tmp_path / "bad.txt").write_text("c001 1 2 3\n")
    args = parser.parse_args(["eval-mtmc", "--gt", gt, "--pred", str(tmp_path / "bad.txt")])
    assert args.func(args) == 2
    assert "bad.txt:1" in capsys.readouterr().err
    args = parser.parse_args(["eval-mtmc", "--gt", str(tmp_path / "nope.txt"), "--pred", gt])
    assert args.func(args) == 2 and "nope.txt" in capsys.readouterr().err
