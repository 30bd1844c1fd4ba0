"""``kdnas-deploy run CONFIG.yaml``: the whole pipeline from one config (:mod:`kdnas_deploy.pipeline`)."""

from __future__ import annotations

from pathlib import Path

import click

from kdnas_deploy.cli.options import no_progress_option


@click.command("run")
@click.argument("config", type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Run folder (default: runs/<config name>). A rerun resumes; unchanged stages are reused.",
)
@no_progress_option()
def run(config: Path, out: Path | None, no_progress: bool) -> None:
    """Run the whole pipeline from a YAML CONFIG: latency table (reused when one matches this machine, else
    built and kept in the table cache) -> teacher (given or fine-tuned) -> KD-NAS search -> final distillation
    -> ONNX export -> bench -> report.

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


__all__ = ["run"]
