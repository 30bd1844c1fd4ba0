import json

import pytest

from kdnas_deploy.errors import DataError
from kdnas_deploy.tasks import get_task


def test_csv_single_file_with_string_labels_splits_deterministically(tmp_path):
    path = tmp_path / "reviews.csv"
    rows = ["text,label"] + [f'"review number {i}, quoted",{"pos" if i % 3 else "neg"}' for i in range(200)]
    path.write_text("\n".join(rows) + "\n")
    task = get_task(path)
    assert task.num_labels == 2 and task.label_names == ("neg", "pos") and not task.is_regression
    train, dev = task.load_split("train"), task.load_split("dev")
    assert len(train) + len(dev) == 200 and 5 <= len(dev) <= 40
    assert train[0]["text"] == "review number 0, quoted" or "quoted" in train[0]["text"]
    again = get_task(path).load_split("dev")
    assert list(again["text"]) == list(dev["text"])
    assert not set(train["text"]) & set(dev["text"])


def test_folder_with_jsonl_pairs_and_regression(tmp_path):
    for split, n in (("train", 30), ("dev", 10)):
        lines = [json.dumps({"a": f"s{i}", "b": f"t{i}", "score": i / 7}) for i in range(n)]
        (tmp_path / f"{split}.jsonl").write_text("\n".join(lines))
    task = get_task(tmp_path, text_columns="a,b", label_column="score")
    assert task.is_regression and task.num_labels == 1 and task.main_metric == "pearson"
    assert task.text_fields == ("a", "b")
    dev = task.load_split("dev")
    assert len(dev) == 10 and dev[3]["label"] == pytest.approx(3 / 7)


def test_tsv_and_json_list(tmp_path):
    tsv = tmp_path / "d.tsv"
    tsv.write_text("sentence\tlabel\n" + "".join(f'it "was" {i}\t{i % 3}\n' for i in range(60)))
    task = get_task(tsv, text_column="sentence")
    assert task.num_labels == 3
    js = tmp_path / "d.json"
    js.write_text(json.dumps([{"text": f"x{i}", "label": i % 2} for i in range(40)]))
    assert get_task(js).num_labels == 2


def test_bad_file_tasks(tmp_path):
    with pytest.raises(DataError, match="unknown task"):
        get_task(tmp_path / "nothing.csv")
    p = tmp_path / "x.csv"
    p.write_text("text,target\nhello,1\n")
    with pytest.raises(DataError, match="lacks column"):
        get_task(p)
    p.write_text("text,label\n")
    with pytest.raises(DataError, match="no rows"):
        get_task(p)
    j = tmp_path / "x.json"
    j.write_text("{not json")
    with pytest.raises(DataError, match="cannot parse"):
        get_task(j)
