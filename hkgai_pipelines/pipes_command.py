"""Run a command under Dagster Pipes, for entry points that do not speak Pipes themselves.

    python -m hkgai_pipelines.pipes_command --report-json OUT/stats.json -- hkgai curate ...

The command runs as a child process with this process's stdout and stderr, so its output reaches
wherever this process's goes (on KubeRay: the Ray job's driver log, which the RayJob's submitter
pod prints and the launcher reads). When it exits 0, the JSON object it wrote to `--report-json`
becomes the asset materialization: its top-level numbers and strings as metadata (nested tables
stay in the file, whose path is reported too). A non-zero exit raises inside the Pipes session,
so Dagster gets the command, the exit code and the last lines of output as the failure, and this
process exits with the same code (the Ray job is FAILED with it).

Only `dagster_pipes` is imported: the module runs inside the Ray cluster's driver, where nothing
of the orchestrator is needed.
"""

from __future__ import annotations

import argparse
import collections
import json
import shlex
import subprocess
import sys
from pathlib import Path

from dagster_pipes import open_dagster_pipes

#: Lines of the command's output kept for the error message when it fails.
TAIL_LINES = 20


class CommandFailed(RuntimeError):
    def __init__(self, command: list[str], code: int, tail: list[str]) -> None:
        self.summary = f"{shlex.join(command)} exited {code}"
        super().__init__(f"{self.summary}; last output:\n" + ("\n".join(tail) or "(no output)"))
        self.code = code


def report_metadata(report: dict, report_path: Path) -> dict:
    """The scalar fields of the report (numbers, strings, booleans) and where the report is."""
    metadata = {key: value for key, value in report.items() if isinstance(value, (int, float, str, bool))}
    metadata["report"] = str(report_path)
    return metadata


def run(command: list[str], report_json: Path) -> int:
    """Runs `command` inside a Pipes session. Raises CommandFailed for a non-zero exit, and
    FileNotFoundError or json.JSONDecodeError when the report is missing or is not JSON."""
    with open_dagster_pipes() as pipes:
        pipes.log.info(f"running {shlex.join(command)}")
        tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        # Output is passed through line by line (and kept for the error message) instead of
        # inherited, so a failure names what the command said last.
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace") as process:
            for line in process.stdout:
                sys.stdout.write(line)
                sys.stdout.flush()
                tail.append(line.rstrip("\n"))
        if process.returncode != 0:
            raise CommandFailed(command, process.returncode, list(tail))
        report = json.loads(report_json.read_text(encoding="utf-8"))
        pipes.report_asset_materialization(metadata=report_metadata(report, report_json))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report-json", type=Path, required=True, help="the JSON object the command writes (e.g. OUT/stats.json)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command and its arguments")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given (put it after --)")
    try:
        return run(command, args.report_json)
    except CommandFailed as error:
        # Also on stderr: the last lines of the driver's log are Ray's message for a failed job.
        print(f"pipes_command: {error.summary}", file=sys.stderr, flush=True)
        return error.code


if __name__ == "__main__":
    sys.exit(main())
