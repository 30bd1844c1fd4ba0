"""Which NNCF setting keeps a task's dev metric: the OpenVINO int8 of trained students, scored on the whole dev set.

For each ``--student TASK=HF_FOLDER``: export its fp32 IR (``export --backend cpu-openvino --precision fp32``),
then quantise that IR with NNCF's transformer preset under each setting and score the int8 IR on the task's dev
split (one unpadded request per row, as served), beside the fp32 IR's score and the int8 outputs' agreement with
fp32 (argmax share; Pearson correlation for regression). Settings: ``default`` (the whole graph, 300 train rows),
``head`` (the task head in fp32 as ``quantize_ir`` leaves it), ``rows1000`` (1,000 calibration rows),
``head+rows1000`` (what ``export`` does now). Writes tools/results/nncf_scope.json. No timing: any machine state.

    python -m tools.bench_nncf_scope --data-dir ../shared/data/glue \\
        --student stsb=work_artifacts/glue_table_v2/stsb/int8/search/student \\
        --student cola=work_artifacts/glue_table_v2/cola/int8/search/student
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from kdnas_deploy.io import atomic_write_json
from tools._common import GLUE_DIR, RESULTS, shown

SETTINGS = ("default", "head", "rows1000", "head+rows1000")


def dev_requests(tokenizer: Any, task: Any) -> tuple[list[dict[str, np.ndarray]], np.ndarray]:
    from kdnas_deploy.tasks.lengths import task_texts

    labels = np.asarray(task.load_split("dev")["label"])
    reqs = [{k: np.asarray(v, dtype=np.int64) for k, v in tokenizer(*t, truncation=True, max_length=128,
                                                                     return_tensors="np").items()}
            for t in task_texts(task, "dev")]  # fmt: skip
    return reqs, labels


def score(model: Any, task: Any, reqs: list[dict[str, np.ndarray]], labels: np.ndarray) -> tuple[dict, np.ndarray]:
    import openvino as ov

    from kdnas_deploy.runtime.openvino import OpenVinoSettings

    compiled = ov.Core().compile_model(model, "CPU", OpenVinoSettings(threads=2, precision="fp32").to_config())
    names = [p.get_any_name() for p in compiled.inputs]
    out = np.concatenate([compiled({n: r[n] for n in names})[0] for r in reqs])
    pred = out[:, 0] if task.is_regression else out.argmax(-1)
    return {k: round(float(v), 4) for k, v in task.compute_metrics(pred, labels).items()}, out


def one_student(task_name: str, folder: Path, data_dir: Path, work: Path) -> dict[str, Any]:
    import openvino as ov
    from transformers import AutoTokenizer

    from kdnas_deploy.export.exporter import ExportOptions, export_model
    from kdnas_deploy.export.serving import calibration_feeds
    from kdnas_deploy.runtime.openvino import nncf_int8
    from kdnas_deploy.tasks import get_task

    task = get_task(task_name, str(data_dir))
    out = work / task_name
    export_model(folder, out, ExportOptions(backend="cpu-openvino", threads=2, bench_reps=3, force=True),
                 log=lambda m: None)  # fmt: skip
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    reqs, labels = dev_requests(tokenizer, task)
    fp32_metrics, fp32_out = score(ov.Core().read_model(str(out / "openvino_model.xml")), task, reqs, labels)
    result: dict[str, Any] = {"student": shown(folder), "main_metric": task.main_metric, "fp32": fp32_metrics,
                              "dev_rows": len(reqs), "settings": {}}  # fmt: skip
    for setting in SETTINGS:
        rows = 1000 if "rows1000" in setting else 300
        feeds = calibration_feeds(tokenizer, task_name, str(data_dir), max_length=128, examples=rows)
        t0 = time.perf_counter()
        model = nncf_int8(ov.Core().read_model(str(out / "openvino_model.xml")), feeds, setting.startswith("head"))
        seconds = time.perf_counter() - t0
        metrics, int8_out = score(model, task, reqs, labels)
        agree = (float(np.corrcoef(int8_out[:, 0], fp32_out[:, 0])[0, 1]) if task.is_regression
                 else float((int8_out.argmax(-1) == fp32_out.argmax(-1)).mean()))  # fmt: skip
        main = task.main_metric
        result["settings"][setting] = {
            "metrics": metrics,
            "calibration_rows": len(feeds),
            "drop_points": round(100 * (fp32_metrics[main] - metrics[main]), 2),
            "agreement_with_fp32": round(agree, 4),
            "quantize_s": round(seconds, 1),
        }
        print(
            f"{task_name} {setting}: {main} {metrics[main]:.4f} (fp32 {fp32_metrics[main]:.4f}), agreement {agree:.4f}",
            flush=True,
        )
    return result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--student", action="append", required=True, help="TASK=HF_FOLDER (repeatable)")
    ap.add_argument("--data-dir", type=Path, default=GLUE_DIR)
    ap.add_argument("--out", type=Path, default=RESULTS / "nncf_scope.json")
    args = ap.parse_args(argv)
    doc: dict[str, Any] = {"schema_version": 1, "tool": "python -m tools.bench_nncf_scope", "settings": SETTINGS,
                           "tasks": {}}  # fmt: skip
    specs = [spec.partition("=")[::2] for spec in args.student]
    for spec, (task_name, folder) in zip(args.student, specs, strict=True):
        if not task_name or not folder or not (Path(folder) / "config.json").is_file():
            ap.error(f"--student {spec!r}: expected TASK=HF_FOLDER, a model folder with a config.json")
    from kdnas_deploy.errors import KdnasError

    with tempfile.TemporaryDirectory(prefix="kdnas-nncf-") as tmp:
        for task_name, folder in specs:
            try:
                doc["tasks"][task_name] = one_student(task_name, Path(folder), args.data_dir, Path(tmp))
            except KdnasError as exc:  # a task without dev labels, a folder that does not export: one line
                ap.exit(2, f"Error: {task_name}: {str(exc).splitlines()[0]}\n")
    atomic_write_json(args.out, doc)
    print(f"wrote {shown(args.out)}")


if __name__ == "__main__":
    main()
