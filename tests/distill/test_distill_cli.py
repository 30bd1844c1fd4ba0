import json
import subprocess
import sys

import pytest


def run_cli(*args, env=None):
    import os

    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "kdnas_deploy", *map(str, args)], capture_output=True, text=True, env=full_env
    )


def _one_line_error(r, needle):
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert needle in r.stderr, r.stderr


class _InProcess:
    def __init__(self, returncode, stderr):
        self.returncode, self.stderr = returncode, stderr


@pytest.fixture
def cli_inproc(capsys):
    """Run ``kdnas_deploy.cli.main`` in this process (no torch re-import per call)."""
    from kdnas_deploy.cli import main

    def run(*args):
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code
        return _InProcess(code, capsys.readouterr().err)

    return run


def _builtin_dev_majority() -> float:
    from kdnas_deploy.tasks.builtin import generate

    labels = generate("dev")["label"]
    return max(labels.count(0), labels.count(1)) / len(labels)


@pytest.mark.slow
def test_finetune_distill_evaluate_round_trip(tiny_backbone, tmp_path):
    teacher = tmp_path / "teacher"
    r = run_cli(
        "teacher",
        "finetune",
        "--model",
        tiny_backbone,
        "--task",
        "builtin",
        "--out",
        teacher,
        "--epochs",
        "1",
        "--max-train-samples",
        "64",
        "--batch-size",
        "16",
        "--no-progress",
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["out_dir"] == str(teacher)
    assert (teacher / "dev_metrics.json").is_file() and (teacher / "teacher_record.json").is_file()
    recipe = json.loads((teacher / "teacher_record.json").read_text())["recipe"]
    assert out["recipe"] == recipe["recipe"] == "glue-tiny"  # --preset auto by default: 64 rows are a tiny set
    assert recipe["overrides"] == {"epochs": 1.0, "batch_size": 16, "max_train_samples": 64}
    assert 32 <= recipe["settings"]["max_seq_len"] <= 128 and recipe["length"]["lengths"]["count"] >= 64
    majority = _builtin_dev_majority()
    assert out["baseline"] == {"accuracy": pytest.approx(majority)}
    assert json.loads((teacher / "dev_metrics.json").read_text())["baseline"]["accuracy"] == pytest.approx(majority)
    weak = out["accuracy"] - majority < 0.05 - 1e-9  # 64 rows, one epoch: usually a weak teacher
    assert out["weak_teacher"] is weak and ("WARNING: weak teacher" in r.stderr) is weak
    student = tmp_path / "student"
    distill = ("distill", "--teacher", teacher, "--arch", "L=1,H=16,A=2,F=32", "--task", "builtin", "--out", student,
               "--epochs", "1", "--max-train-samples", "64", "--no-progress")  # fmt: skip
    r = run_cli(*distill)
    assert r.returncode == 0, r.stderr
    assert (student / "architecture.json").is_file() and (student / "distill_record.json").is_file()
    assert json.loads(r.stdout.strip().splitlines()[-1])["baseline"]["accuracy"] == pytest.approx(majority)
    assert json.loads((student / "distill_record.json").read_text())["baseline"]["accuracy"] == pytest.approx(majority)
    metrics = tmp_path / "m.json"
    r = run_cli("evaluate", student, "--task", "builtin", "--json", metrics, "--no-progress")
    assert r.returncode == 0, r.stderr
    doc = json.loads(metrics.read_text())
    assert doc["split"] == "dev" and doc["num_examples"] == 1000 and 0 <= doc["accuracy"] <= 1
    assert doc["baseline"] == {"accuracy": pytest.approx(majority)}
    r = run_cli(*distill)
    _one_line_error(r, "already exists")
    assert (student / "distill_record.json").is_file()  # nothing already written lost


def test_cli_bad_task_exits_2_in_a_subprocess(tiny_teacher):
    _one_line_error(run_cli("evaluate", tiny_teacher, "--task", "nope"), "unknown task")


def test_cli_bad_inputs_exit_2(tiny_teacher, tiny_backbone, tmp_path, cli_inproc):
    run_cli = cli_inproc
    _one_line_error(run_cli("evaluate", tiny_backbone, "--task", "builtin"), "not a sequence classifier")
    _one_line_error(run_cli("evaluate", tmp_path / "absent", "--task", "builtin"), "not found")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for f in tiny_teacher.iterdir():
        (corrupt / f.name).write_bytes(f.read_bytes())
    (corrupt / "model.safetensors").write_bytes(b"garbage" * 10)
    _one_line_error(run_cli("evaluate", corrupt, "--task", "builtin"), "cannot load the checkpoint")
    three = tmp_path / "three.csv"
    three.write_text("text,label\n" + "".join(f"good movie {i},{i % 3}\n" for i in range(30)))
    _one_line_error(run_cli("evaluate", tiny_teacher, "--task", three), "3 label")
    _one_line_error(run_cli("evaluate", tiny_teacher, "--task", three, "--label-column", "y"), "lacks column")
    _one_line_error(
        run_cli(
            "distill",
            "--teacher",
            tiny_teacher,
            "--arch",
            "L=2,H=30,A=4,F=8",
            "--task",
            "builtin",
            "--out",
            tmp_path / "s",
        ),
        "does not divide",
    )
    _one_line_error(
        run_cli(
            "teacher",
            "finetune",
            "--model",
            tmp_path / "nothing",
            "--task",
            "builtin",
            "--out",
            tmp_path / "t",
        ),
        "not found",
    )
