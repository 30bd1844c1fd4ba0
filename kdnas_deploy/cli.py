"""The ``kdnas-deploy`` command line. Stage commands are imported lazily so ``--help`` stays instant."""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from kdnas_deploy.errors import KdnasError

# command name -> (module, attribute, one-line help shown by `kdnas-deploy --help`)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "latency": ("kdnas_deploy.latency.cli", "latency", "Build, inspect, query and validate latency lookup tables."),
    "teacher": ("kdnas_deploy.distill.cli", "teacher", "Fine-tune a pretrained encoder into a task teacher."),
    "distill": ("kdnas_deploy.distill.cli", "distill", "Distill a student of a given architecture from a teacher."),
    "evaluate": ("kdnas_deploy.distill.cli", "evaluate", "Evaluate a model folder on a task's GLUE metric."),
    "search": ("kdnas_deploy.search.cli", "search", "KD-NAS: search the best student under a latency budget."),
    "export": ("kdnas_deploy.export.cli", "export", "Export a model to optimized (fused, optionally int8) ONNX."),
    "bench": ("kdnas_deploy.export.cli", "bench", "Benchmark PyTorch and ONNX models side by side."),
    "run": ("kdnas_deploy.pipeline.cli", "run", "Run the whole pipeline from a YAML config."),
}


class LazyGroup(click.Group):
    """A click group whose sub-commands live in modules imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module_name, attr, short = COMMANDS[name]
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("kdnas_deploy"):
                return _unavailable(name, short)
            raise
        return getattr(module, attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Use the static one-line help so that `--help` imports no stage module.
        rows = [(name, short) for name, (_, _, short) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _unavailable(name: str, short: str) -> click.Command:
    @click.command(name=name, help=f"{short} (not available in this build)")
    def _cmd() -> None:
        raise KdnasError(f"command {name!r} is not available in this build")

    return _cmd


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="kdnas-deploy")
def cli() -> None:
    """kdnas-deploy: hardware-aware knowledge-distillation NAS for small transformer students.

    \b
    Stages (each writes one artifact that the next reads):
      latency build  -> latency table JSON (per device, precision, batch, sequence length)
      search         -> run folder: candidates log, Pareto front, best_arch.json, distilled student
      export         -> ONNX folder (fused, optionally int8) with an export report
      bench          -> measured latency of models side by side, against the table's prediction
      run            -> all of the above from one YAML config

    Bad input gives a one-line error and exit code 2.
    """


def main(argv: list[str] | None = None) -> Any:
    """Entry point: run the CLI, turning :class:`KdnasError` into a one-line message and exit code 2."""
    try:
        return cli.main(args=argv, prog_name="kdnas-deploy", standalone_mode=False)
    except KdnasError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except FileExistsError as exc:
        click.echo(f"Error: {exc} already exists and is not empty (use --force)", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
