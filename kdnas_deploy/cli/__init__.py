"""The ``kdnas-deploy`` command line. Stage commands are imported lazily so ``--help`` stays instant.

Each command module (``kdnas_deploy.cli.<stage>``) is a thin layer: it turns typed options (see
:mod:`kdnas_deploy.cli.options`) into the library's config object and calls the library. Logging is set up
here and only here (``-v``/``-q`` on the root command); library code only uses ``logging.getLogger(__name__)``.
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Any

import click

from kdnas_deploy.errors import KdnasError

# command name -> (module, attribute, one-line help shown by `kdnas-deploy --help`)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "latency": ("kdnas_deploy.cli.latency", "latency", "Build, list, inspect, query and validate latency tables."),
    "teacher": ("kdnas_deploy.cli.distill", "teacher", "Fine-tune a pretrained encoder into a task teacher."),
    "distill": ("kdnas_deploy.cli.distill", "distill", "Distill a student of a given architecture from a teacher."),
    "evaluate": ("kdnas_deploy.cli.distill", "evaluate", "Evaluate a model folder on a task's GLUE metric."),
    "search": ("kdnas_deploy.cli.search", "search", "KD-NAS: search the best student under a latency budget."),
    "export": ("kdnas_deploy.cli.export", "export", "Export a model to optimized (fused, optionally int8) ONNX."),
    "bench": ("kdnas_deploy.cli.export", "bench", "Benchmark PyTorch and ONNX models side by side."),
    "run": ("kdnas_deploy.cli.run", "run", "Run the whole pipeline from a YAML config."),
}


class LazyGroup(click.Group):
    """A click group whose sub-commands live in modules imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module_name, attr, _ = COMMANDS[name]
        return getattr(importlib.import_module(module_name), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Use the static one-line help so that `--help` imports no stage module.
        rows = [(name, short) for name, (_, _, short) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def configure_logging(verbose: int = 0, quiet: bool = False) -> None:
    """The CLI's logging: INFO from kdnas_deploy by default, DEBUG with ``-v``, warnings and errors with ``-q``.

    The only place in the package that configures the root logger. Third-party loggers stay at WARNING
    (INFO with ``-vv``).
    """
    if quiet:
        ours, root = logging.WARNING, logging.WARNING
    else:
        ours = logging.DEBUG if verbose else logging.INFO
        root = logging.INFO if verbose > 1 else logging.WARNING
    fmt = "%(levelname)s %(name)s: %(message)s" if verbose else "%(message)s"
    logging.basicConfig(level=root, format=fmt, stream=sys.stderr)  # no-op where a host configured logging
    logging.getLogger("kdnas_deploy").setLevel(ours)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="kdnas-deploy")
@click.option("-v", "--verbose", count=True, help="More log output (-v: debug messages, -vv: also libraries').")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors (progress bars: --no-progress).")
def cli(verbose: int, quiet: bool) -> None:
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
    if verbose and quiet:
        raise click.UsageError("-v/--verbose and -q/--quiet exclude each other")
    configure_logging(verbose, quiet)


def _usage_line(exc: click.UsageError) -> str:
    """A usage error as one line: the message and where to read the help."""
    hint = ""
    if exc.ctx is not None:
        hint = f" (see '{exc.ctx.command_path} --help')"
    return f"Error: {exc.format_message()}{hint}"


def main(argv: list[str] | None = None) -> Any:
    """Entry point: run the CLI, turning :class:`KdnasError` into a one-line message and its exit code.

    A refusal (exit code 2) also removes the output folders the command created but filled with no result
    (:func:`kdnas_deploy.io.discard_unused_folders`): bad input found after ``--out`` was opened writes nothing.
    """
    from kdnas_deploy import io

    io.CREATED_FOLDERS.clear()
    try:
        return cli.main(args=argv, prog_name="kdnas-deploy", standalone_mode=False)
    except KdnasError as exc:
        if exc.exit_code == 2:
            io.discard_unused_folders()
        click.echo(f"Error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.UsageError as exc:
        io.discard_unused_folders()
        click.echo(_usage_line(exc), err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except FileExistsError as exc:
        io.discard_unused_folders()
        click.echo(f"Error: {exc} already exists and is not empty (use --force)", err=True)
        sys.exit(2)
    except MemoryError:
        click.echo("Error: out of memory: the inputs asked for more memory than this machine has "
                   "(try a smaller --batch, --seq or --batch-size)", err=True)  # fmt: skip
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
