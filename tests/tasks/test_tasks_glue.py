import pytest

from kdnas_deploy.errors import DataError
from kdnas_deploy.tasks import get_task, task_names

EXPECTED = {  # rows per SOURCES.md (quoting off)
    "sst2": (67349, 872, 2, "accuracy"),
    "mrpc": (3668, 408, 2, "f1"),
    "cola": (8551, 1043, 2, "matthews_correlation"),
    "stsb": (5749, 1500, 1, "pearson"),
}


def test_every_glue_task_is_registered():
    for name in ("sst2", "mrpc", "cola", "stsb", "qnli", "rte", "mnli", "qqp", "wnli", "builtin"):
        assert name in task_names()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_local_glue_layout_row_counts_and_metric(glue_dir, name):
    n_train, n_dev, num_labels, metric = EXPECTED[name]
    task = get_task(name, glue_dir)
    assert (task.num_labels, task.main_metric) == (num_labels, metric)
    train, dev = task.load_split("train"), task.load_split("validation")
    assert (len(train), len(dev)) == (n_train, n_dev)
    for field in (*task.text_fields, "label"):
        assert field in train.column_names
    assert all(isinstance(t, str) and t for t in dev[task.text_fields[0]][:50])


def test_mrpc_bom_is_stripped_and_pairs_kept(glue_dir):
    dev = get_task("mrpc", glue_dir).load_split("dev")
    assert dev[0]["sentence1"].startswith("He said the foodservice")
    assert dev[0]["sentence2"].startswith('"The foodservice')  # stray quote kept: quoting is off
    assert set(dev["label"]) == {0, 1}


def test_cola_has_no_header_and_stsb_is_regression(glue_dir):
    cola = get_task("cola", glue_dir).load_split("dev")
    assert cola[0] == {"sentence": "The sailors rode the breeze clear of the rocks.", "label": 1}
    stsb = get_task("stsb", glue_dir)
    assert stsb.is_regression
    labels = stsb.load_split("train")["label"]
    assert min(labels) >= 0.0 and max(labels) <= 5.0 and any(v % 1 for v in labels)


def test_glue_dir_from_environment(glue_dir, monkeypatch):
    monkeypatch.setenv("KDNAS_GLUE_DIR", str(glue_dir))
    assert len(get_task("sst2").load_split("dev")) == 872


def test_bad_glue_inputs_are_data_errors(tmp_path, glue_dir):
    with pytest.raises(DataError, match="unknown task"):
        get_task("sst3")
    with pytest.raises(DataError, match="not a directory"):
        get_task("sst2", tmp_path / "missing")
    with pytest.raises(DataError, match="not found"):
        get_task("rte", glue_dir).load_split("train")  # RTE is not in the shared copy
    with pytest.raises(DataError, match="unknown split"):
        get_task("sst2", glue_dir).load_split("test")
    bad = tmp_path / "SST-2"
    bad.mkdir()
    (bad / "train.tsv").write_text("text\tlabel\nfine\t1\n")
    with pytest.raises(DataError, match="lacks column"):
        get_task("sst2", tmp_path).load_split("train")
    (bad / "dev.tsv").write_text("sentence\tlabel\n")
    with pytest.raises(DataError, match="empty"):
        get_task("sst2", tmp_path).load_split("dev")
