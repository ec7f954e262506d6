"""compile, upload, run and schedule with the real kfp.Client.

No KFP API server can run here (it needs Kubernetes): the client talks to ``kfp_server``, a recording
stand-in of the v2beta1 REST endpoints it calls (tests/support/standins.py), and the tests read back what
the client sent.
"""

import json

import yaml
from typer.testing import CliRunner

from kubetune.cli import app

runner = CliRunner()
OSFT = {
    "algorithm": "osft", "unfreeze_rank_ratio": 0.25, "effective_batch_size": 8, "max_tokens_per_gpu": 2048,
    "max_seq_len": 1024, "learning_rate": 1e-5, "validation_frequency": 20, "save_best_val_loss": True,
}  # fmt: skip


def kubetune(*args):
    return runner.invoke(app, list(args), catch_exceptions=False)


def posts(server, path):
    return [r for r in server.requests if r["method"] == "POST" and r["path"].endswith(path)]


def test_compile_every_pipeline(tmp_path):
    for pipeline in ("finetune", "evaluate-export"):
        assert kubetune("compile", pipeline, "-o", str(tmp_path / f"{pipeline}.yaml")).exit_code == 0
        spec = next(yaml.safe_load_all((tmp_path / f"{pipeline}.yaml").read_text()))
        assert spec["pipelineInfo"]["name"].startswith("kubetune-")
    result = kubetune("compile", "nope", "-o", str(tmp_path / "x.yaml"))
    assert result.exit_code == 2 and "unknown pipeline 'nope'" in result.output


def test_upload_is_idempotent_by_name_and_content(kfp_server):
    first = kubetune("upload", "finetune")
    assert first.exit_code == 0 and "uploaded pipeline" in first.output
    again = kubetune("upload", "finetune")
    assert again.exit_code == 0 and "already there" in again.output
    assert len(posts(kfp_server, "/pipelines/upload")) == 1 and len(posts(kfp_server, "/pipelines/upload_version")) == 1
    named = kubetune("upload", "finetune", "--version", "release-1")
    assert "uploaded" in named.output and len(posts(kfp_server, "/pipelines/upload_version")) == 2
    uploaded = posts(kfp_server, "/pipelines/upload")[0]
    assert uploaded["query"]["name"] == "kubetune-finetune" and "kubetune-finetune" in uploaded["body"]["uploadfile"]


def test_run_sends_the_validated_spec_and_parameters_and_waits(tmp_path, kfp_server):
    spec = tmp_path / "osft.json"
    spec.write_text(json.dumps(OSFT, indent=2))
    result = kubetune(
        "run", "--spec", str(spec), "-p", "data_uri=s3://data/chat.jsonl", "-p", "gpus=4", "--wait", "--poll", "0.01"
    )
    assert result.exit_code == 0, result.output
    assert "RUNNING" in result.output and "SUCCEEDED" in result.output
    (created,) = posts(kfp_server, "/runs")
    parameters = created["body"]["runtime_config"]["parameters"]
    assert parameters["algorithm"] == "osft" and parameters["gpus"] == 4 and parameters["data_uri"] == "s3://data/chat.jsonl"
    assert parameters["training_kwargs"]["validation_frequency"] == 20 and "algorithm" not in parameters["training_kwargs"]


def test_a_bad_spec_stops_before_anything_reaches_the_cluster(tmp_path, kfp_server):
    spec = tmp_path / "osft.json"
    spec.write_text(json.dumps({**OSFT, "validaton_frequency": 20}, indent=2))
    result = kubetune("run", "--spec", str(spec))
    assert result.exit_code == 2 and f"{spec}:10" in result.output and "did you mean `validation_frequency`" in result.output
    assert kfp_server.requests == []


def test_a_multi_node_run_refuses_a_spec_that_places_its_own_nodes(tmp_path, kfp_server):
    spec = tmp_path / "osft.json"
    spec.write_text(json.dumps({**OSFT, "nnodes": 4, "nproc_per_node": 8}))
    result = kubetune("run", "finetune-trainjob", "--spec", str(spec), "-p", "nnodes=2", "-p", "gpus=4")
    assert result.exit_code == 2 and "nnodes: is set by the TrainJob (nnodes=2" in result.output
    assert "nproc_per_node: is 8 in the spec but 4 in the TrainJob" in result.output and kfp_server.requests == []
    spec.write_text(json.dumps(OSFT))
    assert kubetune("run", "finetune-trainjob", "--spec", str(spec), "-p", "nnodes=2").exit_code == 0


def test_schedule_create_list_pause_resume_delete(tmp_path, kfp_server):
    spec = tmp_path / "osft.json"
    spec.write_text(json.dumps(OSFT))
    created = kubetune(
        "schedule", "create", "weekly-retrain", "--cron", "0 0 3 * * 1", "--spec", str(spec), "-p", "data_uri=s3://data/latest/"
    )
    assert created.exit_code == 0, created.output
    (request,) = posts(kfp_server, "/recurringruns")
    body = request["body"]
    assert body["display_name"] == "weekly-retrain" and body["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * 1"
    assert body["no_catchup"] is True and int(body["max_concurrency"]) == 1
    assert body["runtime_config"]["parameters"]["data_uri"] == "s3://data/latest/"
    assert body["runtime_config"]["parameters"]["training_kwargs"]["unfreeze_rank_ratio"] == 0.25
    (recurring_id,) = kfp_server.recurring
    assert recurring_id in kubetune("schedule", "list").output
    assert (
        kubetune("schedule", "pause", recurring_id).exit_code == 0 and kfp_server.recurring[recurring_id]["status"] == "DISABLED"
    )
    assert (
        kubetune("schedule", "resume", recurring_id).exit_code == 0 and kfp_server.recurring[recurring_id]["status"] == "ENABLED"
    )
    assert kubetune("schedule", "delete", recurring_id).exit_code == 0 and not kfp_server.recurring
    paths = [r["path"] for r in kfp_server.requests if r["method"] in ("POST", "DELETE")]
    assert paths[-3:] == [f"/apis/v2beta1/recurringruns/{recurring_id}:{a}" for a in ("disable", "enable")] + [
        f"/apis/v2beta1/recurringruns/{recurring_id}"
    ]


def test_schedule_needs_one_six_field_trigger(kfp_server):
    five = kubetune("schedule", "create", "x", "--cron", "0 3 * * 1")
    assert five.exit_code == 2 and "KFP wants 6, seconds first" in five.output
    both = kubetune("schedule", "create", "x", "--cron", "0 0 3 * * 1", "--interval", "60")
    assert both.exit_code == 2 and "exactly one of --cron or --interval" in both.output


def test_values_the_steps_after_training_would_refuse_stop_the_run_up_front(kfp_server):
    def refused(*args):
        result = kubetune("run", *args)
        assert result.exit_code == 2 and kfp_server.requests == [], result.output
        return " ".join(result.output.split())

    assert '-p export_checkpoint: must be "best" or "final", got \'latest\'' in refused("-p", "export_checkpoint=latest")
    assert "-p gpu_memory_gib: must be the GiB of one GPU, or 0 to derive them, got -1" in refused("-p", "gpu_memory_gib=-1")
    output = refused("-p", "registry_server=http://mr:8080")
    assert "-p registry_model_name: is required when registry_server is set" in output
    assert "-p registry_model_version: is required when registry_server is set" in output
    named = ("-p", "registry_server=http://mr:8080", "-p", "registry_model_name=chat", "-p", "registry_model_version=v1")
    output = refused(*named, "-p", "export_destination=/mnt/models/chat")
    assert "-p registry_uri: is required to register a model exported to a local path" in output
    assert "not a location the serving stack can read" in refused(*named, "-p", "registry_uri=/mnt/models/chat")
    output = refused("finetune-trainjob", "-p", "model_uri=s3://models/granite")
    assert "-p model_uri: an s3:// model cannot be used by finetune-trainjob" in output and "hub id" in output
    local = ("-p", "export_destination=/mnt/models/chat", "-p", "registry_uri=pvc://models/chat")
    assert kubetune("run", *named, *local, "-p", "export_checkpoint=final").exit_code == 0
    assert kubetune("run", "-p", "model_uri=s3://models/granite").exit_code == 0  # the in-pod training step has the secret
