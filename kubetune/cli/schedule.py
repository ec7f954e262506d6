"""``kubetune schedule``: recurring runs of a pipeline in KFP."""

from __future__ import annotations

from typing import Annotated

import typer

from kubetune.cli.pipeline import Experiment, Host, Namespace, Params, Spec, Token, connect, hide_credentials

app = typer.Typer(help="Recurring runs: create, list, pause, resume, delete.", no_args_is_help=True)


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Name of the recurring run.")],
    pipeline: Annotated[
        str, typer.Option(help="finetune, finetune-workspace, finetune-trainjob or evaluate-export.")
    ] = "finetune",
    cron: Annotated[str | None, typer.Option(help="6-field cron, seconds first: '0 0 3 * * 1' = Mondays 03:00.")] = None,
    interval: Annotated[int | None, typer.Option(help="Seconds between runs (instead of --cron).")] = None,
    spec: Spec = None,
    param: Params = None,
    experiment: Experiment = "kubetune",
    max_concurrency: Annotated[int, typer.Option(help="Runs of this schedule at once.")] = 1,
    start: Annotated[str | None, typer.Option(help="RFC 3339 start time.")] = None,
    end: Annotated[str | None, typer.Option(help="RFC 3339 end time.")] = None,
    catchup: Annotated[bool, typer.Option(help="Backfill intervals missed while paused (off by default).")] = False,
    host: Host = None,
    namespace: Namespace = None,
    token: Token = None,
) -> None:
    """Create a recurring run, e.g. retrain every week on fresh data.

    Example: kubetune schedule create weekly-retrain --cron "0 0 3 * * 1" --spec examples/osft.json -p data_uri=s3://data/latest/
    """
    from kubetune.runs import kfp_api

    hide_credentials(host, token)
    kfp_api.check_pipeline(pipeline)
    kfp_api.check_schedule(cron, interval, max_concurrency, start, end)  # before anything connects
    arguments = kfp_api.parameters(spec, param or [], pipeline)
    created = kfp_api.schedule(
        connect(host, namespace, token),
        pipeline,
        name,
        arguments,
        experiment,
        cron,
        interval,
        max_concurrency,
        start,
        end,
        catchup,
    )
    typer.echo(f"created recurring run {created['recurring_run_id']} ({name}) of {pipeline} version {created['version']}")


@app.command("list")
def list_(experiment: Experiment = "kubetune", host: Host = None, namespace: Namespace = None, token: Token = None) -> None:
    """List the recurring runs of an experiment."""
    from kubetune.runs.kfp_api import experiment_id

    hide_credentials(host, token)
    kfp_client = connect(host, namespace, token)
    listed = kfp_client.list_recurring_runs(experiment_id=experiment_id(kfp_client, experiment), page_size=100)
    for item in listed.recurring_runs or []:
        trigger = item.trigger.cron_schedule.cron if item.trigger and item.trigger.cron_schedule else "interval"
        typer.echo(f"{item.recurring_run_id}  {item.display_name}  {item.status}  {trigger}")


def _act(action: str, recurring_run_id: str, host, namespace, token) -> None:
    hide_credentials(host, token)
    kfp_client = connect(host, namespace, token)
    calls = {
        "paused": kfp_client.disable_recurring_run,
        "resumed": kfp_client.enable_recurring_run,
        "deleted": kfp_client.delete_recurring_run,
    }
    calls[action](recurring_run_id)
    typer.echo(f"{action} {recurring_run_id}")


@app.command("pause")
def pause(recurring_run_id: str, host: Host = None, namespace: Namespace = None, token: Token = None) -> None:
    """Stop a recurring run from starting new runs (it can be resumed)."""
    _act("paused", recurring_run_id, host, namespace, token)


@app.command("resume")
def resume(recurring_run_id: str, host: Host = None, namespace: Namespace = None, token: Token = None) -> None:
    """Let a paused recurring run start runs again."""
    _act("resumed", recurring_run_id, host, namespace, token)


@app.command("delete")
def delete(recurring_run_id: str, host: Host = None, namespace: Namespace = None, token: Token = None) -> None:
    """Delete a recurring run."""
    _act("deleted", recurring_run_id, host, namespace, token)
