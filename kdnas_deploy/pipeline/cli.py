"""``kdnas-deploy run CONFIG.yaml``."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("run")
@click.argument("config", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Run folder (default: runs/<config name>). A rerun resumes; unchanged stages are reused.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def run(config: Path, out: Path | None, no_progress: bool) -> None:
    """Run the whole pipeline from a YAML CONFIG: latency table (reused when one matches this machine) ->
    teacher (given or fine-tuned) -> KD-NAS search -> final distillation -> ONNX export -> bench -> report.

    The config is checked before any work starts. Each stage writes its artifact into the run folder and is
    skipped on a rerun when its inputs did not change, so a killed run resumes.
    """
    if no_progress:
        import os

        os.environ["TQDM_DISABLE"] = "1"  # also silences the bars of the stages run inside
    from kdnas_deploy.pipeline.config import PipelineConfig
    from kdnas_deploy.pipeline.run import run_pipeline

    cfg = PipelineConfig.from_yaml(config)
    run_pipeline(cfg, out or Path("runs") / config.stem, echo=click.echo, progress=not no_progress)
