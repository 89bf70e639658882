"""`hkgai`: the command-line contract of ARCHITECTURE.md (demo, ui, curate, langid, redact, ingest, ask,
serve, ...)."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

app = typer.Typer(help="Hong Kong LLM pipeline: curate, train, align, evaluate, register, serve.", no_args_is_help=True)
console = Console(stderr=True)


def _settings():
    from hkgai_pipelines.settings import get_settings

    try:
        return get_settings()
    except ValueError as error:
        console.print(f"[red]settings error:[/red] {error}")
        raise typer.Exit(2) from None


def _stdin_lines():
    """stdin as UTF-8 lines; an undecodable line is reported, not fatal."""
    for number, raw in enumerate(sys.stdin.buffer, start=1):
        try:
            yield number, raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as error:
            console.print(f"[yellow]line {number}: invalid UTF-8 at byte {error.start}[/yellow]")
            yield number, None


@app.command()
def demo() -> None:
    """Materialize the whole asset graph on the current profile, into the persistent instance."""
    from rich.markup import escape

    from hkgai_pipelines.demo import run_demo

    settings = _settings()
    started = time.monotonic()
    console.print(f"[bold]hkgai demo[/bold]: profile={settings.profile} home={settings.home_dir}")
    with console.status("materializing ...") as status:
        # Plain text: a partition name in brackets ([hk_knowledge]) is not Rich markup.
        summary = run_demo(settings, on_progress=lambda message: (status.update(escape(message)), console.print(message, markup=False)))
    table = Table(title="materialized assets")
    table.add_column("asset")
    table.add_column("highlights")
    for key, metadata in summary.materialized.items():
        highlights = ", ".join(f"{k}={v}" for k, v in metadata.items() if not str(v).startswith("|") and k in ("records", "quarantined", "input_records", "kept", "rejected", "dedup_rate", "dvc_md5", "documents", "chunks", "embedded", "carried_over", "recall_at_5", "mrr", "version", "steps", "first_loss", "final_loss", "tokens_per_second", "benchmark_version", "safe_pct_overall"))
        table.add_row(key, highlights)
    console.print(table)
    if summary.checks:
        console.print("checks: " + ", ".join(f"{name} {'passed' if ok else 'FAILED'}" for name, ok in summary.checks.items()))
    console.print(f"{len(summary.runs)} runs in {time.monotonic() - started:.0f}s; Dagster instance {settings.dagster_home}")
    console.print("Open the UIs with [bold]make ui[/bold] (or [bold]hkgai ui[/bold]): Dagster on http://127.0.0.1:3000, MLflow on http://127.0.0.1:5000")
    if not summary.success:
        console.print("[red]demo failed[/red]: see the failed run in the Dagster UI")
        raise typer.Exit(1)


@app.command()
def ui(
    dagster_port: Annotated[int, typer.Option(help="Dagster UI port", envvar="HKGAI_DAGSTER_PORT", min=1, max=65535)] = 3000,
    mlflow_port: Annotated[int, typer.Option(help="MLflow UI port; run links in asset metadata follow it unless HKGAI_MLFLOW_UI_URL is set", envvar="HKGAI_MLFLOW_PORT", min=1, max=65535)] = 5000,
) -> None:
    """Start the Dagster UI (with its daemon) and the MLflow UI on localhost. A busy port is
    refused (exit 1) before anything starts. Ctrl-C, SIGTERM or SIGHUP stops both with every
    process they started (SIGKILL after 10 s) and exits 0; if one server exits by itself the
    other is stopped and the exit code is 1."""
    import contextlib

    from hkgai_pipelines.platform import port_in_use

    if dagster_port == mlflow_port:
        console.print(f"hkgai ui: --dagster-port and --mlflow-port are both {dagster_port}; choose two ports", style="red", soft_wrap=True, markup=False)
        raise typer.Exit(1)
    for port, what, option, variable in ((dagster_port, "Dagster UI", "--dagster-port", "HKGAI_DAGSTER_PORT"),
                                         (mlflow_port, "MLflow UI", "--mlflow-port", "HKGAI_MLFLOW_PORT")):
        if port_in_use(port):
            console.print(f"hkgai ui: port {port} (the {what}) is in use on 127.0.0.1; stop what holds it, or choose another port "
                          f"with {option} PORT or {variable}=PORT", style="red", soft_wrap=True, markup=False)
            raise typer.Exit(1)
    from hkgai_pipelines.platform import mlflow_ui_url, run_ui

    settings = _settings()

    def started(_processes) -> None:
        links = os.environ.get("HKGAI_MLFLOW_UI_URL") or mlflow_ui_url(mlflow_port)
        console.print(f"Dagster UI: http://127.0.0.1:{dagster_port}")
        console.print(f"MLflow UI:  {mlflow_ui_url(mlflow_port)}", soft_wrap=True)
        # MLflow 3 opens in its GenAI workspace, whose sidebar has no model registry: print the
        # registry's own address, which opens in any workspace (README, "A reviewer approves").
        from hkgai_pipelines.params import load_registry_params

        model = load_registry_params(settings.params_file).model_name
        console.print(f"review models: {mlflow_ui_url(mlflow_port)}/#/models/{model} (sidebar: 'Model training', then "
                      "'Model registry'; the 'Promote model' button copies a version to another model and is not the approval)",
                      soft_wrap=True, markup=False)
        if links.rstrip("/") != mlflow_ui_url(mlflow_port):
            console.print(f"run links in asset metadata: {links} (HKGAI_MLFLOW_UI_URL)", soft_wrap=True, markup=False)
        console.print("Ctrl-C stops both.")

    def say(message: str) -> None:
        with contextlib.suppress(OSError):  # the terminal may be gone (SIGHUP)
            console.print(f"hkgai ui: {message}", soft_wrap=True, markup=False)

    try:
        code = run_ui(settings, dagster_port, mlflow_port, say=say, on_started=started)
    except KeyboardInterrupt:  # Ctrl-C before the servers started: nothing to stop
        code = 130
    raise typer.Exit(code)


@app.command()
def langid() -> None:
    """UTF-8 lines on stdin -> one JSON object a line: {"lang", "score"}."""
    from hkgai_pipelines.curation.langid import LanguageIdentifier

    identifier = LanguageIdentifier()
    for _, line in _stdin_lines():
        result = identifier.identify(line) if line is not None else None
        payload = result.to_json() if result else {"lang": "other", "score": 0.0, "error": "invalid UTF-8"}
        sys.stdout.write(json.dumps(payload, ensure_ascii=False) + "\n")


@app.command()
def redact() -> None:
    """Text on stdin -> the same text with PII replaced by <HKID>, <PHONE>, <EMAIL>, <CREDIT_CARD>."""
    from hkgai_pipelines.curation.pii import PiiRedactor

    data = sys.stdin.buffer.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        console.print(f"[red]invalid UTF-8 at byte {error.start}[/red]")
        raise typer.Exit(2) from None
    sys.stdout.write(PiiRedactor().redact(text).text)


@app.command()
def curate(
    inputs: Annotated[list[Path] | None, typer.Argument(help="files or folders (.jsonl with text, .txt, .parquet, .html, .warc(.gz)) in any common encoding")] = None,
    out: Annotated[Path, typer.Option("--out", help="output folder")] = Path("cleaned"),
    lake: Annotated[Path | None, typer.Option("--lake", help="read raw/<source>.parquet of every catalog source, in catalog order (what cleaned_corpus does)")] = None,
    params_file: Annotated[Path | None, typer.Option("--params", help="params.yaml (default: the project's)")] = None,
    source: Annotated[str, typer.Option(help="source name for records that carry none")] = "local_files",
    licence: Annotated[str, typer.Option(help="licence for records that carry none")] = "unknown",
    workers: Annotated[int | None, typer.Option("--workers", min=1, help="tasks run at once; above 1 runs on Ray (default: 1 in this process; on the RAY_ADDRESS cluster, its CPUs)")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1, help="records per task (default 1000); memory per task grows with it")] = None,
    executor: Annotated[str | None, typer.Option("--executor", help="local (this process) or ray (default: ray with --workers above 1 or RAY_ADDRESS, else local)")] = None,
    work_dir: Annotated[Path | None, typer.Option("--work-dir", help="where a run keeps its part files until it finishes, so a stopped run resumes (default: --out)")] = None,
    parts_dir: Annotated[Path | None, typer.Option("--parts-dir", help="incremental: keep each input file's part files here between runs and process only new or changed files (a file's position in the input order counts: a file added before others re-processes those after it); when files are only appended, their duplicates are decided against the last run's dedup index kept there; one run at a time")] = None,
    report: Annotated[Path | None, typer.Option("--report", help="write the run (counts, content hash, phases, dedup, and for --parts-dir cached_units, processed_units, cached_records) to this JSON file")] = None,
) -> None:
    """Run the curation pipeline on files: cleaned.parquet/ and rejected.parquet/ (folders of
    Parquet part files), quarantine.jsonl, stats.json. Memory stays bounded by the batch size;
    --workers N (N > 1) runs on Ray started in this process, RAY_ADDRESS on that cluster."""
    from hkgai_pipelines.curation import engine
    from hkgai_pipelines.curation.inputs import file_units, lake_units
    from hkgai_pipelines.curation.versions import OutputVersions
    from hkgai_pipelines.params import load_curation_params
    from hkgai_pipelines.sources.catalog import CatalogError, load_catalog

    settings = _settings()
    if bool(inputs) == bool(lake):
        console.print(f"[red]give input files/folders or --lake{', not both' if inputs else ''}[/red]")
        raise typer.Exit(2)
    # Checked before any work: a run that finished would otherwise fail on its last write.
    for option, folder in (("--out", out), ("--work-dir", work_dir), ("--parts-dir", parts_dir)):
        if folder is not None and folder.exists() and not folder.is_dir():
            console.print(f"[red]{option} {escape(str(folder))} is a file: give a folder[/red]", soft_wrap=True)
            raise typer.Exit(2)
    if report is not None and report.is_dir():
        console.print(f"[red]--report {escape(str(report))} is a folder: give a file name[/red]", soft_wrap=True)
        raise typer.Exit(2)
    if report is not None and inputs and (any(os.path.realpath(report) == os.path.realpath(given) for given in inputs)
                                          or _inside_input(report, inputs)):
        # A trial: `--report in/a.jsonl` replaced an input file with the report.
        console.print(f"[red]--report {escape(str(report))} is in the input: give a path outside it[/red]", soft_wrap=True)
        raise typer.Exit(2)
    blocking = next((parent for parent in report.parents if parent.exists() and not parent.is_dir()), None) if report else None
    if blocking is not None:
        console.print(f"[red]--report {escape(str(report))}: {escape(str(blocking))} is a file, not a folder[/red]", soft_wrap=True)
        raise typer.Exit(2)
    for option, folder in (("--work-dir", work_dir), ("--parts-dir", parts_dir)):
        if folder is not None and inputs and any(os.path.realpath(folder) == os.path.realpath(given) for given in inputs):
            console.print(f"[red]{option} {escape(str(folder))} is an input folder: its part files would be read as "
                          f"input; give another folder[/red]", soft_wrap=True)
            raise typer.Exit(2)
    held = OutputVersions.holding(out)
    if held is not None:
        # Writing into a published version in place would change it under its readers and
        # behind its DVC record.
        console.print(f"[red]--out {escape(str(out))} is the current version of a versioned output or one of its "
                      f"published versions ({escape(str(held.folder))}): materialize cleaned_corpus to publish a new "
                      f"version, or give another folder[/red]", soft_wrap=True)
        raise typer.Exit(2)
    try:
        params = load_curation_params(params_file or settings.params_file)
        engine.choose_executor(workers, executor)
    except (FileNotFoundError, ValueError) as error:
        console.print(f"[red]{escape(str(error))}[/red]", soft_wrap=True)
        raise typer.Exit(2) from None
    try:
        # Missing inputs are found here, before Ray starts.
        catalog_names = None
        if lake:
            catalog_names = load_catalog(settings.sources_file).names
            units = lake_units(lake, catalog_names)
        else:
            # The output folder inside an input folder is not input: a second run would read
            # its own outputs and reject the real input as their duplicates.
            exclude = _output_folder_inside(out, inputs)
            # The run's own part files are not input either: a parts folder inside the input
            # was read back as input by the next run (a trial: 11 -> 43 -> 161 records).
            exclude += [folder for folder in (work_dir, parts_dir) if folder is not None and _inside_input(folder, inputs)]
            units = file_units(inputs, source=source, licence=licence, max_record_bytes=params.max_record_bytes, exclude=exclude)
            # Said only when there is something to skip (not on a first run into its own input).
            if exclude and any(os.path.lexists(path) for path in exclude) and out.is_dir():
                what = "the output folder" if exclude == [out] else "the outputs in"
                console.print(f"skipping {what} {escape(str(out))} inside the input", soft_wrap=True)
        with console.status("curating ...") as status:
            # On a terminal the status line follows every task; elsewhere (a log, CI, a pod)
            # a line when a phase starts and ends and every 30 seconds between.
            if console.is_terminal:
                def progress(phase: str, done: int, total: int) -> None:
                    line = f"curating: {escape(engine.describe_progress(phase, done, total))}"
                    if phase == "resume":  # a line that stays, above the status line
                        console.print(line, soft_wrap=True)
                    status.update(line)
            else:
                progress = engine.progress_lines(lambda line: console.print(f"curating: {line}", markup=False, soft_wrap=True))
            run = engine.curate(units, params, out, workers=workers, batch_size=batch_size or engine.DEFAULT_BATCH_SIZE, executor=executor,
                                work_dir=work_dir, parts_dir=parts_dir, progress=progress)
    except FileNotFoundError as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from None
    except CatalogError as error:
        console.print(f"[red]source catalog error:[/red] {escape(str(error))}", soft_wrap=True)
        raise typer.Exit(1) from None
    except (ConnectionError, engine.CurationBusy, engine.WorkersLost) as error:  # RAY_ADDRESS names a cluster that does not answer; another run; workers killed
        console.print(f"[red]{escape(str(error))}[/red]", soft_wrap=True)
        raise typer.Exit(1) from None
    except OSError as error:
        # A folder it cannot write (read-only, a full disk): the previous outputs are as they
        # were, and a later run resumes the part files this one finished.
        console.print(f"[red]curation stopped: {escape(str(error))}[/red]", soft_wrap=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        # Ctrl-C or SIGINT: the previous outputs are as they were; the finished part files stay.
        console.print("curation interrupted: the previous outputs are unchanged and any finished part files are kept, "
                      "so the same command again resumes from them", soft_wrap=True)
        raise typer.Exit(130) from None
    if report is not None:
        from hkgai_pipelines.sources.lake import atomic_path

        try:
            report.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(report) as temp:
                # With --lake, the catalog's sources in their order: the order keys, and so which
                # record of a duplicate cluster is kept, follow it.
                written = run.to_report() | ({"catalog": catalog_names} if catalog_names is not None else {})
                temp.write_text(json.dumps(written, ensure_ascii=False, indent=1), encoding="utf-8")
        except OSError as error:
            console.print(f"[red]the outputs are written, the report is not: {escape(str(error))}[/red]", soft_wrap=True)
            raise typer.Exit(1) from None
    stats = run.stats
    if not stats.input_records:
        console.print("[yellow]no input records: the inputs hold no file the readers take, or only blank lines "
                      "(a blank line is no record)[/yellow]", soft_wrap=True)
    if run.resumed_records:
        console.print(f"resumed a stopped run: {run.resumed_records} input records (quarantined ones included) already processed",
                      soft_wrap=True)
    if parts_dir is not None:
        if not run.dedup.get("index_extended"):
            decided = "duplicates decided over every record"
        elif run.processed_units:
            decided = "the new records' duplicates decided against the last run's dedup index"
        else:
            decided = "nothing new: the verdicts of the last run's dedup index"
        console.print(f"incremental: {run.processed_units} input file(s) processed, {run.cached_units} taken from "
                      f"{escape(str(parts_dir))} ({run.cached_records} records not processed again); {decided}", soft_wrap=True)
    console.print(
        f"input {stats.input_records} = kept {stats.kept} + rejected {stats.rejected} + quarantined {stats.quarantined}; "
        f"outputs in {run.outputs.out_dir} ({run.cluster}" + (f", {run.workers} workers)" if run.workers > 1 else ")"),
        soft_wrap=True, markup=False,
    )


def _output_folder_inside(out: Path, inputs: list[Path]) -> list[Path]:
    """What of `out` a walk of the inputs must skip (symlinks followed): [out] when it lies
    strictly inside an input folder; its four outputs when it is an input folder itself (a
    second `hkgai curate . --out .` read the first one's outputs as input); else []."""
    from hkgai_pipelines.curation.pipeline import OUTPUT_NAMES

    if _inside_input(out, inputs):
        return [out]
    real_out = Path(os.path.realpath(out))
    if any(real_out == Path(os.path.realpath(given)) and real_out.is_dir() for given in inputs):
        return [real_out / name for name in OUTPUT_NAMES]
    return []


def _inside_input(folder: Path, inputs: list[Path]) -> bool:
    """Whether `folder` lies strictly inside one of the input folders (symlinks followed)."""
    real_folder = Path(os.path.realpath(folder))
    return any(real_folder != real and real_folder.is_relative_to(real) and real.is_dir()
               for real in (Path(os.path.realpath(given)) for given in inputs))


@app.command()
def ingest(
    out: Annotated[Path, typer.Option("--out", help="lake folder; writes raw/<source>.parquet")],
    sources: Annotated[list[str] | None, typer.Option("--source", help="only these sources")] = None,
) -> None:
    """Ingest the sources of configs/sources.yaml into a lake folder (the DVC `ingest` stage)."""
    from hkgai_pipelines.sources.catalog import CatalogError, load_catalog
    from hkgai_pipelines.sources.ingest import ingest_source

    try:
        # A malformed catalog or a folder outside the allowed roots (RootNotAllowedError, at
        # load or, for a folder that became a link since, at read) is one line, not a traceback.
        catalog = load_catalog(_settings().sources_file)
        for name in sources or catalog.names:
            result = ingest_source(catalog.get(name), out)
            console.print(f"{name}: {result.records} records, {result.quarantined} quarantined -> {result.path}")
    except CatalogError as error:
        console.print(f"[red]source catalog error:[/red] {escape(str(error))}", soft_wrap=True)
        raise typer.Exit(1) from None


@app.command()
def guard() -> None:
    """Prompts on stdin, one a line -> one JSON a line: {"verdict": "allow"|"block", "category"};
    a line that cannot be checked (blank, not UTF-8) is blocked with an "error" saying why,
    so output line N always answers input line N. Rules, then the learned classifier
    (safety/classifier.py), or the Hugging Face guard model in HKGAI_GUARD_MODEL_DIR
    (safety/guard_models.py)."""
    from hkgai_pipelines.safety.classifier import load_guard
    from hkgai_pipelines.safety.guard import GuardInputError
    from hkgai_pipelines.safety.guard_models import GuardModelError

    settings = _settings()
    try:
        hybrid = load_guard(cache_dir=settings.home_dir / "cache", model_dir=settings.guard_model_dir)
    except GuardModelError as error:
        console.print(f"[red]guard model error:[/red] {escape(str(error))}", soft_wrap=True)
        raise typer.Exit(2) from None
    for number, line in _stdin_lines():
        try:
            if line is None:
                raise GuardInputError("invalid UTF-8")
            payload = hybrid.check(line).to_json()
        except GuardInputError as error:
            payload = {"verdict": "block", "category": None, "error": str(error)}
        sys.stdout.write(json.dumps(payload, ensure_ascii=False) + "\n")


def _rag_runtime():
    """The store, embedder and params the current profile's resources describe."""
    from hkgai_pipelines.params import load_rag_params
    from hkgai_pipelines.resources import resources_for

    settings = _settings()
    resources = resources_for(settings=settings)
    return resources["vector_store"], resources["embedder"], load_rag_params(settings.params_file), settings


def _answer_service(model):
    """An AnswerService with everything `hkgai ask` loads, answering with `model` (a
    CurrentModel; None: extractive answers, the registry is not asked)."""
    from hkgai_pipelines.rag.answer import Answerer
    from hkgai_pipelines.rag.server import AnswerService
    from hkgai_pipelines.safety.classifier import load_guard

    store_resource, embedder_resource, params, settings = _rag_runtime()
    generator = None  # chosen per question by the AnswerService
    embedder = embedder_resource.get_embedder()
    answerer = Answerer(
        store=store_resource.get_store(), embedder=embedder, alias=store_resource.alias,
        generator=generator, alpha=params.alpha, min_similarity=params.min_answer_similarity,
        guard=load_guard(embedder=embedder, cache_dir=settings.home_dir / "cache", model_dir=settings.guard_model_dir),
    )
    return AnswerService(answerer, model)


def _loaded_model(settings):
    """The CurrentModel of `settings` with its model loaded, before anything else is: a registry
    that does not answer is reported in seconds, not after the index and the guard have loaded.
    Raises ModelUnavailable."""
    from hkgai_pipelines.rag.models import CurrentModel
    from hkgai_pipelines.rag.server import current_model

    model = CurrentModel(settings)
    current_model(model)
    return model


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="the question, in Cantonese, Chinese or English")],
    as_json: Annotated[bool, typer.Option("--json", help="print the JSON contract")] = False,
    extractive: Annotated[bool, typer.Option("--extractive", help="answer with passage sentences, not a model")] = False,
) -> None:
    """Answer a question from the knowledge index, with citations and guardrail verdicts. The
    MLflow champion answers; the newest aligned_model only when the registry has no champion. An
    unreachable registry is one line and exit 1 (`{"error"}` on stdout with --json). With
    HKGAI_SERVE_URL set, the running `hkgai serve` there answers (same JSON) and nothing is
    loaded here."""

    def fail(message: str, code: int, json_error: bool = False) -> NoReturn:
        if as_json and json_error:
            sys.stdout.write(json.dumps({"error": message}, ensure_ascii=False) + "\n")
        console.print(message, style="red", soft_wrap=True, markup=False)
        raise typer.Exit(code)

    settings = _settings()
    if settings.serve_url:
        # Nothing heavy is imported on this path: the server has it all loaded.
        from hkgai_pipelines.rag.server import Endpoint, EndpointError

        try:
            payload = Endpoint(settings.serve_url, settings.serve_timeout_s).ask(question, extractive=extractive)
        except EndpointError as error:
            # 400 is the question itself (what GuardInputError exits with locally); anything else
            # is the service, and answering here instead would hide that it is down.
            fail(str(error), 2 if error.status == 400 else 1, json_error=error.status != 400)
        _print_answer(payload, as_json)
        return
    from hkgai_pipelines.rag.answer import NoLiveIndex
    from hkgai_pipelines.rag.server import ModelUnavailable
    from hkgai_pipelines.safety.guard import GuardInputError

    try:
        service = _answer_service(None if extractive else _loaded_model(settings))
        result = service.ask(question, extractive=extractive)
    except ModelUnavailable as error:
        fail(str(error), 1, json_error=True)
    except GuardInputError as error:
        fail(str(error), 2)
    except NoLiveIndex as error:
        where = f"the Weaviate at {settings.weaviate_url}" if settings.weaviate_url else (
            f"the home {settings.home_dir} (HKGAI_HOME; unset, .hkgai in the working directory)")
        fail(f"{error}, in {where}", 1)
    except RuntimeError as error:
        fail(str(error), 1)
    _print_answer(result.to_json(), as_json)


def _print_answer(payload: dict, as_json: bool) -> None:
    """The `hkgai ask` output of one answer (AskResult's JSON object)."""
    if as_json:
        sys.stdout.write(json.dumps(payload, ensure_ascii=False) + "\n")
        return
    sys.stdout.write(payload["answer"] + "\n")
    for number, citation in enumerate(payload["citations"], start=1):
        sys.stdout.write(f"  [{number}] {citation['title']} ({citation['doc_id']}, score {citation['score']})\n")
    if payload.get("note"):
        console.print(payload["note"], style="dim", soft_wrap=True, markup=False)


@app.command()
def serve(
    port: Annotated[int, typer.Option(help="port to listen on", envvar="HKGAI_SERVE_PORT", min=1, max=65535)] = 8000,
    host: Annotated[str, typer.Option(help="address to listen on (0.0.0.0: every interface)", envvar="HKGAI_SERVE_HOST")] = "127.0.0.1",
) -> None:
    """Serve `hkgai ask` (guardrails, retrieval, the champion) as an OpenAI-compatible API,
    loaded once: POST /v1/chat/completions and /v1/completions, GET /v1/models and /health.
    The registry is asked which model answers before every question, so a new champion or a
    rollback is served from the next question on. A busy port, or a champion that cannot be
    loaded at start, is one line and exit 1. Point `hkgai ask` at it with HKGAI_SERVE_URL."""
    from hkgai_pipelines.platform import port_in_use

    if port_in_use(port, host if host not in ("0.0.0.0", "::") else "127.0.0.1"):
        console.print(f"hkgai serve: port {port} is in use on {host}; stop what holds it, or choose another port with --port "
                      "PORT or HKGAI_SERVE_PORT=PORT", style="red", soft_wrap=True, markup=False)
        raise typer.Exit(1)
    import uvicorn

    from hkgai_pipelines.rag.server import ModelUnavailable, create_app

    started = time.monotonic()
    settings = _settings()
    try:
        model = _loaded_model(settings)  # now: the first question should not wait for it
    except ModelUnavailable as error:
        console.print(f"hkgai serve: {error}", style="red", soft_wrap=True, markup=False)
        raise typer.Exit(1) from None
    service = _answer_service(model)
    # The embedder and the guard pay for their first call once, here.
    service.answerer.guard.check("warm up")
    if service.index_version() is None:
        console.print(f"hkgai serve: no live index behind {service.answerer.alias} yet; questions get HTTP 503 until "
                      "vector_index is materialized", style="yellow", soft_wrap=True, markup=False)
    from hkgai_pipelines.rag.models import registered_model_name

    name = registered_model_name(settings)
    console.print(f"hkgai serve: {service.model_version() or 'no model yet (extractive answers)'} loaded in "
                  f"{time.monotonic() - started:.1f}s; OpenAI-compatible API on http://{host}:{port}/v1 (model '{name}'); "
                  f"`HKGAI_SERVE_URL=http://{host}:{port} hkgai ask ...` uses it. Ctrl-C stops it.", soft_wrap=True, markup=False)
    uvicorn.run(create_app(service, name), host=host, port=port, log_level="info")


index_app = typer.Typer(help="The vector index: list versions, roll the alias back.")
app.add_typer(index_app, name="index")


@index_app.command("list")
def index_list() -> None:
    """Index versions, oldest first, with their state; the live one is marked. A `building`
    version is a refresh still running or one that was killed: it is never served or rolled
    back to, and the next refresh drops it."""
    store_resource, _, _, _ = _rag_runtime()
    store = store_resource.get_store()
    live = store.get_alias(store_resource.alias)
    for info in store.list_versions():
        marker = "*" if info.name == live else " "
        sys.stdout.write(f"{marker} {info.name}  {info.state}  {info.chunks} chunks  {info.embedder} ({info.dim}-d)  {info.created_at}\n")


@index_app.command("rollback")
def index_rollback(to: Annotated[str | None, typer.Option("--to", help="version to point the alias at")] = None) -> None:
    """Point the alias back at the previous complete version (or --to VERSION), after the
    target passes the retrieval check again (the thresholds of params.yaml)."""
    from hkgai_pipelines.rag.index import IndexRefresher
    from hkgai_pipelines.rag.retrieval_eval import load_questions

    store_resource, embedder_resource, params, _ = _rag_runtime()
    refresher = IndexRefresher(
        store_resource.get_store(), embedder_resource.get_embedder(), alias=store_resource.alias, keep_versions=params.keep_versions,
        min_recall_at_5=params.min_recall_at_5, min_mrr=params.min_mrr, alpha=params.alpha,
    )
    try:
        previous, current = refresher.rollback(to, questions=load_questions())
    except Exception as error:
        # The text as is: a failed check lists the missed questions in brackets, not markup.
        console.print(str(error), style="red", soft_wrap=True, markup=False)
        raise typer.Exit(1) from None
    sys.stdout.write(f"{store_resource.alias}: {previous} -> {current}\n")


corpus_app = typer.Typer(help="The cleaned corpus: list its versions, roll back to an earlier one, restore the pulled one.")
app.add_typer(corpus_app, name="corpus")


@corpus_app.command("list")
def corpus_list() -> None:
    """Versions of the lake's cleaned corpus, oldest first: `*` marks the current one; each with
    whether it was published (or rolled back from), its counts (stats.json) and its DVC hash."""
    from hkgai_pipelines import versioning
    from hkgai_pipelines.curation.versions import COMPLETE_MARKER, OutputVersions

    versions = OutputVersions(_settings().lake_dir, "cleaned")
    current, published, rolled_back = versions.current(), versions.published(), versions.rolled_back()
    if current == versions.link:
        sys.stdout.write(f"* {versions.link} (a folder from before versions; the next cleaned_corpus run moves it into {versions.folder.name}/)\n")
    elif not versions.versions():
        sys.stdout.write(f"no versions in {versions.folder} (materialize cleaned_corpus first)\n")
        return
    for version in versions.versions():
        marker = "*" if version == current else " "
        state = "rolled back from" if version.name in rolled_back else "published" if version.name in published else "never published"
        try:
            stats = json.loads((version / COMPLETE_MARKER).read_text(encoding="utf-8"))
            counts = f"{stats['kept']} kept, {stats['rejected']} rejected, {stats['quarantined']} quarantined"
        except (OSError, ValueError, KeyError, TypeError):
            counts = "incomplete"
        md5 = versioning.record_md5(published.get(version.name)) or "-"
        sys.stdout.write(f"{marker} {version.name}  {state}  {counts}  dvc {md5}\n")


@corpus_app.command("rollback")
def corpus_rollback(to: Annotated[str | None, typer.Option("--to", help="version to make current (default: the previous published one)")] = None) -> None:
    """Make an earlier published version of the cleaned corpus current (one atomic link swap)
    and point `cleaned.dvc` at it, so `dvc pull cleaned.dvc` restores it. Default: the newest version
    older than this one that was not rolled back from and whose content differs (a second
    rollback walks further back). Waits for nothing: refuses
    while a materialization holds the corpus. The next materialization curates the inputs
    again: fix the input or the code that made the bad version first."""
    from hkgai_pipelines import versioning
    from hkgai_pipelines.curation.versions import OutputVersions, PublishBusyError

    lake_dir = _settings().lake_dir
    versions = OutputVersions(lake_dir, "cleaned")
    try:
        if not versions.folder.is_dir():
            raise ValueError(f"{versions.link} has no versions to roll back to (materialize cleaned_corpus first)")
        with versions.lock():
            previous = versions.current()
            target = versions.rollback_target(to)
            versions.make_current(target, rolled_back_from=previous.name if previous is not None and previous != versions.link else None)
            record = versions.published().get(target.name)
            if record:
                versioning.point(lake_dir, "cleaned", f"{versions.folder.name}/{target.name}", record)
    except (ValueError, PublishBusyError) as error:
        console.print(str(error), style="red", soft_wrap=True, markup=False)
        raise typer.Exit(1) from None
    except OSError as error:  # after the link swap: cleaned.dvc not re-pointed
        console.print(f"{error}; the next cleaned_corpus run re-points cleaned.dvc", style="red", soft_wrap=True, markup=False)
        raise typer.Exit(1) from None
    dvc = f"cleaned.dvc records {target.name}" if record else "no DVC record logged for it: cleaned.dvc unchanged"
    sys.stdout.write(f"cleaned: {previous.name if previous else None} -> {target.name}; {dvc}\n")


@corpus_app.command("restore")
def corpus_restore() -> None:
    """After `dvc pull cleaned.dvc` into a lake that has the version folder but not the
    `cleaned` link (a fresh checkout, a training node): make the version cleaned.dvc records
    current, logged with that DVC record, so readers, `corpus list` and `corpus rollback` see
    it. Refuses when a version is current already (see rollback), when cleaned.dvc names no
    version, when the folder it names is not there complete (pull first), or when its files
    differ from the listing DVC pulled with the record (a partial pull, an edit, a copy made
    without DVC; versioning.check_workspace_matches)."""
    import yaml

    from hkgai_pipelines import versioning
    from hkgai_pipelines.curation.versions import COMPLETE_MARKER, VERSION_PREFIX, OutputVersions, PublishBusyError

    lake_dir = _settings().lake_dir
    versions = OutputVersions(lake_dir, "cleaned")
    pointer = lake_dir / "cleaned.dvc"
    try:
        current = versions.current()
        if current is not None and current.is_dir():
            raise ValueError(f"{versions.link} is current already ({current.name}): use hkgai corpus rollback --to")
        if os.path.lexists(versions.link) and not versions.link.is_symlink():
            raise ValueError(f"{versions.link} is a file, not the link to a version: move it away first")
        try:
            record = yaml.safe_load(pointer.read_text(encoding="utf-8"))
            path = Path(record["outs"][0]["path"])
        except FileNotFoundError:
            raise ValueError(f"no {pointer}: nothing records a version to restore") from None
        except (OSError, UnicodeDecodeError) as error:
            raise ValueError(f"{pointer} cannot be read: {error}") from None
        except (yaml.YAMLError, KeyError, IndexError, TypeError):
            raise ValueError(f"{pointer} is not a DVC record of one output") from None
        # A version's name, nothing else: "cleaned.versions/.." named the lake itself.
        if path.parent.as_posix() != versions.folder.name or not path.name.startswith(VERSION_PREFIX):
            raise ValueError(f"{pointer} records {path.as_posix()}, not a version in {versions.folder.name}/")
        version = versions.folder / path.name
        if not (version / COMPLETE_MARKER).is_file():
            raise ValueError(f"{version} is not there complete: run `dvc pull cleaned.dvc` in {lake_dir} first")
        # The folder must be what the record says, byte for byte: readers trust the current version.
        versioning.check_workspace_matches(lake_dir, "cleaned")
        with versions.lock():
            versions.make_current(version, record)
    except (ValueError, PublishBusyError, versioning.DvcError) as error:
        console.print(str(error), style="red", soft_wrap=True, markup=False)
        raise typer.Exit(1) from None
    sys.stdout.write(f"cleaned: -> {version.name} (the version cleaned.dvc records, every file checked against its DVC listing)\n")


@app.command()
def bench(
    model: Annotated[str, typer.Argument(help="a model stage (base_model, sft_checkpoint, aligned_model), a checkpoint directory, or an MLflow URI (runs:/..., models:/...)")],
    as_json: Annotated[bool, typer.Option("--json", help="print the whole report as JSON")] = False,
    external_dir: Annotated[str | None, typer.Option("--external-dir", help="folder with yue-benchmark/ and harmbench/ (default: params.yaml)")] = None,
    max_items: Annotated[int | None, typer.Option("--max-items", help="items per external suite (default: params.yaml)")] = None,
) -> None:
    """Run the benchmark suites (what benchmark_scores runs per stage) on one model; print the report."""
    from hkgai_pipelines.evaluation.model import EvalModel, ModelLoadError
    from hkgai_pipelines.evaluation.report import SuiteInputs, evaluate_model, report_tables
    from hkgai_pipelines.evaluation.value_benchmark import load_value_benchmark
    from hkgai_pipelines.params import load_evaluation_params, load_rag_params
    from hkgai_pipelines.rag.knowledge import load_knowledge_documents
    from hkgai_pipelines.sources.catalog import load_catalog

    settings = _settings()
    params = load_evaluation_params(settings.params_file)
    stage_dir = settings.lake_dir / "models" / model / "latest"
    uri = str(stage_dir) if model in ("base_model", "sft_checkpoint", "aligned_model") else model
    try:
        eval_model = EvalModel.load(uri, batch_size=16)
    except ModelLoadError as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(1) from None
    _, embedder_resource, _, _ = _rag_runtime()
    benchmark = load_value_benchmark()
    documents = load_knowledge_documents(load_catalog(settings.sources_file), load_rag_params(settings.params_file).max_document_chars)
    inputs = SuiteInputs.load(documents, embedder_resource.get_embedder(), settings.home_dir / "cache",
                              external_dir or params.external_dir, max_items or params.external_max_items,
                              lambda message: console.print(f"[yellow]{message}[/yellow]"))
    report = evaluate_model(eval_model, benchmark.items, inputs, params.generation_max_new_tokens)
    report.update(benchmark_version=benchmark.version, guardrail_harmbench=inputs.guardrail_harmbench())
    if as_json:
        sys.stdout.write(json.dumps(report, ensure_ascii=False) + "\n")
        return
    tables = report_tables({model: report})
    sys.stdout.write(f"{model} on value benchmark {benchmark.version}\n")
    for title, name in (("value benchmark, likelihood", "table5_likelihood"), ("value benchmark, generation", "table5_generation"),
                        ("language following %", "table6_language_following"), ("multiple choice", "other_suites")):
        headers, rows = tables[name]
        if "stage" in headers:  # one model: the stage column says nothing
            drop = headers.index("stage")
            headers, rows = headers[:drop] + headers[drop + 1:], [row[:drop] + row[drop + 1:] for row in rows]
        sys.stdout.write(f"\n{title}\n" + "  ".join(headers) + "\n" + "\n".join("  ".join(str(v) for v in row) for row in rows) + "\n")
    if report["guardrail_harmbench"]:
        sys.stdout.write(f"\nguardrail on HarmBench: {report['guardrail_harmbench']}\n")


def _model_registry():
    """The registry of the current profile (MLflow from the settings, name from params.yaml)."""
    from hkgai_pipelines.params import load_registry_params
    from hkgai_pipelines.registry.promotion import ModelRegistry
    from hkgai_pipelines.resources import resources_for

    settings = _settings()
    mlflow = resources_for(settings=settings)["mlflow"]
    params = load_registry_params(settings.params_file)
    # The audit log the registry assets keep (lake/registry/audit): the source of truth.
    return ModelRegistry(mlflow.get_client(), params.model_name, tracking_uri=mlflow.tracking_uri, auth_enabled=params.auth_enabled,
                         audit_dir=settings.lake_dir / "registry" / "audit")


def _registry_action(action, model: str, version: str | None) -> None:
    """Run a registry action; a refusal, an unknown version or an unreachable MLflow is one
    line on stderr and exit code 1, never a traceback."""
    from mlflow.exceptions import MlflowException

    from hkgai_pipelines.registry.promotion import PromotionError, RegistryUnavailable

    if version is not None and not version.isdigit():
        console.print(f"[red]{model}: version must be a number such as 3, got {version!r}[/red]")
        raise typer.Exit(1)
    try:
        message = action()
    except (PromotionError, RegistryUnavailable) as error:
        # One line however wide the terminal, and the text as is (MLflow's errors hold brackets).
        console.print(str(error), style="red", soft_wrap=True, markup=False)
        raise typer.Exit(1) from None
    except MlflowException as error:
        reason = "no such version" if error.error_code == "RESOURCE_DOES_NOT_EXIST" else str(error.message).splitlines()[0]
        console.print(f"{model} v{version}: {reason}" if version else f"{model}: {reason}", style="red", soft_wrap=True, markup=False)
        raise typer.Exit(1) from None
    sys.stdout.write(message + "\n")


@app.command()
def approve(
    version: Annotated[str, typer.Argument(help="model version to approve (the current candidate)")],
    reviewer: Annotated[str, typer.Option("--reviewer", help="who approves")],
    note: Annotated[str, typer.Option("--note", help="why")] = "",
) -> None:
    """Approve the candidate version, as setting review.status=approved in the MLflow UI does;
    model_approval_sensor then promotes it to champion."""
    registry = _model_registry()

    def run() -> str:
        registry.approve(version, reviewer, note)
        return f"{registry.name} v{version}: approved by {reviewer}; the approval sensor will make it champion"

    _registry_action(run, registry.name, version)


@app.command()
def reject(
    version: Annotated[str, typer.Argument(help="model version to reject (the current candidate)")],
    reviewer: Annotated[str, typer.Option("--reviewer", help="who rejects")],
    note: Annotated[str, typer.Option("--note", help="why")] = "",
) -> None:
    """Reject the candidate version; model_approval_sensor removes `candidate` with an audit record."""
    registry = _model_registry()

    def run() -> str:
        registry.reject(version, reviewer, note)
        return f"{registry.name} v{version}: rejected by {reviewer}; the approval sensor will close it"

    _registry_action(run, registry.name, version)


@app.command()
def rollback(
    to: Annotated[str | None, typer.Option("--to", help="a former champion version (default: previous_champion)")] = None,
    by: Annotated[str, typer.Option("--by", help="who rolls back")] = "",
    note: Annotated[str, typer.Option("--note", help="why")] = "",
) -> None:
    """Move `champion` back to a former champion, with an audit record. Only a version with a
    promote record in the pipeline's audit log qualifies; tags such as promotion.status do not."""
    import getpass

    registry = _model_registry()

    def run() -> str:
        record = registry.rollback(by or getpass.getuser(), to, note)
        return f"{registry.name}: champion v{record.previous_champion} -> v{record.version} (audited, by {record.by})"

    _registry_action(run, registry.name, to)


def main() -> None:  # pragma: no cover - console entry point
    from hkgai_pipelines.params import ParamsError

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        app()
    except ParamsError as error:
        # A bad params.yaml read by any command (rag, evaluation, registry sections too): one
        # line naming the key, not a traceback.
        console.print(f"[red]{escape(str(error))}[/red]", soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
