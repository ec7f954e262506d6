"""The ``kubetune`` command line: one module per command group, assembled here into ``app``.

The command a TrainJob node runs is not here: it is ``kubetune-node`` (``kubetune.cluster.node_cli``).
"""

from kubetune.cli import local, pipeline, plan, schedule, spec, verify
from kubetune.commands import command_line

app = command_line("Fine-tune LLMs with Kubeflow Pipelines: validate specs, compile and run pipelines.")
for command in (spec.validate, plan.plan, spec.prepare, spec.schema, pipeline.compile, pipeline.upload, pipeline.run):
    app.command()(command)
app.command()(verify.verify)
app.command("run-local")(local.run_local)
app.add_typer(schedule.app, name="schedule")

__all__ = ["app"]
