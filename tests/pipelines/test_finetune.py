"""The finetune pipeline compiles with KFP's compiler and runs end to end with kfp.local on CPU."""

import json
import math
from pathlib import Path

import pytest
import yaml
from kfp import compiler

from kubetune.runtime import TINY_MODEL_URI
from kubetune.secrets import scan_document
from kubetune.steps.curve import LossCurve
from kubetune.steps.export import verify


def looks_like_secret(key: str, value) -> bool:
    """The credential scanner's verdict on one pair."""
    return bool(scan_document({str(key): value})[0])


def _walk(value, key=""):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _walk(v, k)
    elif isinstance(value, list):
        for v in value:
            yield from _walk(v, key)
    else:
        yield key, value


@pytest.mark.parametrize("pipeline", ["finetune", "finetune_workspace", "finetune_trainjob", "evaluate_export"])
def test_pipelines_compile_deterministically_with_gpu_shm_and_secrets_only_where_needed(tmp_path, pipeline):
    import importlib

    module = "evaluate_export" if pipeline == "evaluate_export" else "finetune"
    function = getattr(importlib.import_module(f"kubetune.pipelines.{module}"), pipeline)
    compiler.Compiler().compile(function, str(tmp_path / "a.yaml"))
    compiler.Compiler().compile(function, str(tmp_path / "b.yaml"))
    assert (tmp_path / "a.yaml").read_bytes() == (tmp_path / "b.yaml").read_bytes()
    spec, platform = yaml.safe_load_all((tmp_path / "a.yaml").read_text())
    executors = spec["deploymentSpec"]["executors"]
    gpu = [name for name, e in executors.items() if "accelerator" in e.get("container", {}).get("resources", {})]
    in_pod = pipeline in ("finetune", "finetune_workspace")
    assert gpu == (["exec-train-model"] if in_pod else [])  # the TrainJob's launcher step requests no GPU
    assert all("pip install" not in " ".join(e["container"]["command"]) for e in executors.values() if "container" in e)
    kubernetes = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    shm = [name for name, e in kubernetes.items() if any(v["mountPath"] == "/dev/shm" for v in e.get("emptyDirMounts", []))]
    assert shm == gpu
    pvc = [name for name, e in kubernetes.items() if e.get("pvcMount")]
    train = {"finetune_workspace": "train-model", "finetune_trainjob": "train-on-trainjob"}.get(pipeline)
    assert pvc == ([f"exec-{train}"] if train else [])
    if train:  # the training step is retried, and resumes from (or re-attaches to) the run's work on the PVC
        task = spec["root"]["dag"]["tasks"][train]
        assert task["retryPolicy"]["maxRetryCount"] == 3
        assert kubernetes[f"exec-{train}"]["pvcMount"][0]["mountPath"] == "/workspace"
        inputs = task["inputs"]["parameters"]
        assert inputs["workspace_dir"]["runtimeValue"]["constant"] == "/workspace"
        assert inputs["run_id"]["runtimeValue"]["constant"] == "{{$.pipeline_job_uuid}}"
    if pipeline == "finetune_trainjob":  # the launcher: CPU only, a kubeconfig only if its secret exists
        launcher = kubernetes["exec-train-on-trainjob"]
        assert "secretAsEnv" not in launcher and "emptyDirMounts" not in launcher and "tolerations" not in launcher
        assert launcher["secretAsVolume"][0]["optional"] is True and "secretNameParameter" in launcher["secretAsVolume"][0]
        assert spec["root"]["inputDefinitions"]["parameters"]["nnodes"]["defaultValue"] == 2
    if pipeline.startswith("finetune"):
        assert {"AWS_SECRET_ACCESS_KEY", "HF_TOKEN"} <= {
            k["envVar"] for ref in kubernetes["exec-export-model"]["secretAsEnv"] for k in ref["keyToEnv"]
        }
        if in_pod:
            assert "tolerations" in kubernetes["exec-train-model"] and "nodeSelector" in kubernetes["exec-train-model"]
    for e in kubernetes.values():  # secrets by reference only, and optional: a missing one does not block the pod
        for ref in e.get("secretAsEnv", []):
            assert ref["optional"] is True and "secretNameParameter" in ref
            ref.pop("keyToEnv")  # names of keys in the secret (AWS_SECRET_ACCESS_KEY, ...), not values
    assert not [k for k, v in _walk([spec, platform]) if looks_like_secret(k, v)]


@pytest.mark.parametrize("pipeline", ["finetune", "finetune_workspace", "finetune_trainjob", "evaluate_export"])
def test_the_export_and_the_evaluation_are_given_the_pipelines_model_uri(tmp_path, pipeline):
    """The model card and the registry entry name the base model the run trained, and a LoRA adapter is evaluated
    and merged on it: the export and evaluation tasks take the pipeline parameter ``model_uri`` (whatever their input
    is called). Without it the export would name the spec's ``model_path``, which the run did not train."""
    import importlib

    module = "evaluate_export" if pipeline == "evaluate_export" else "finetune"
    function = getattr(importlib.import_module(f"kubetune.pipelines.{module}"), pipeline)
    compiler.Compiler().compile(function, str(tmp_path / "p.yaml"))
    spec, _ = yaml.safe_load_all((tmp_path / "p.yaml").read_text())
    dags = [c["dag"] for c in [spec["root"], *spec["components"].values()] if "dag" in c]
    tasks = {name: task for dag in dags for name, task in dag["tasks"].items()}
    assert "model_uri" in spec["root"]["inputDefinitions"]["parameters"]
    sources = ("model_uri", "pipelinechannel--model_uri")  # export runs in the promotion gate's dsl.If: a sub-DAG
    for task in ("export-model", "evaluate-model", *(("benchmark-model",) if module == "finetune" else ())):
        fed = [name for name, v in tasks[task]["inputs"]["parameters"].items() if v.get("componentInputParameter") in sources]
        assert len(fed) == 1, f"{task} is not given the pipeline's model_uri"


@pytest.mark.slow
def test_local_run_exports_to_s3_and_registers_when_asked(tmp_path, s3, model_registry):
    """The same local pipeline, publishing to a bucket of the local moto S3 server (credentials from the env),
    then registering it in the Model Registry stand-in (no real registry can run here)."""
    from kubetune.runs.local import run_local

    s3.create_bucket(Bucket="models")
    registry = {"registry_server": model_registry.url, "registry_model_name": "tiny-chat", "registry_model_version": "1"}
    options = {**registry, "benchmark_tasks": "held_out", "benchmark_limit": 3}  # and lm-eval on base and fine-tuned
    # a promotion gate it passes: every threshold checked, the benchmark's measured through the pipeline
    options["promotion_gate"] = '{"max_validation_loss": 100, "min_benchmark_delta": -1e9, "max_forgetting": 1e9}'
    result = run_local(tmp_path, export_destination="s3://models/finetuned/tiny", export_checkpoint="final", **options)
    decision = Path(result["decision"]).read_text()
    assert result["promoted"] is True and result["not_promoted"] == [] and decision.startswith("### Promotion gate: promoted\n")
    assert decision.count("| pass |") == 3 and f"| {result['benchmark']['benchmark_delta']:.4f} | pass |" in decision
    scores = result["benchmark"]  # run-local --evaluate-benchmark shows these: base and fine-tuned per task, the delta
    assert {f"held_out_loglikelihood_{part}" for part in ("base", "tuned", "delta")} <= set(scores)
    assert scores["held_out_loglikelihood_base"] != scores["held_out_loglikelihood_tuned"]  # the fine-tuned model was scored
    assert "| held_out_loglikelihood | bits_per_byte ↓ |" in Path(result["benchmark_report"]).read_text()
    losses = result["validation_loss"]  # run_local's summary of the evaluation: a loss per checkpoint, the best the lowest
    assert len(losses) >= 3 and all(math.isfinite(v) for v in losses.values())
    assert losses[result["best_checkpoint"]] == min(losses.values())
    # the embedded default visibly learns (README "Two commands"): -40% or more from the first checkpoint to the best,
    # and the curve's backend series starts from the untrained model (TRL's eval_on_start, step 0)
    first = next(iter(losses.values()))
    assert losses[result["best_checkpoint"]] <= 0.6 * first, losses
    untrained = LossCurve.read(result["loss_curve"]).backend.validation[0]
    assert untrained.step == 0 and untrained.loss > first, untrained
    assert verify("s3://models/finetuned/tiny") == []
    pointer = json.loads((Path(result["exported_model"]) / "location.json").read_text())
    assert pointer["uri"] == "s3://models/finetuned/tiny" and pointer["manifest"]["kind"] == "merged"
    card = s3.get_object(Bucket="models", Key="finetuned/tiny/README.md")["Body"].read().decode()
    assert "checkpoint `final`" in card and "best validation loss" in card
    assert f"base_model: {TINY_MODEL_URI}\n" in card  # the pipeline's model_uri: the spec names no model_path
    (artifact,) = [r["body"] for r in model_registry.requests if r["method"] == "POST" and r["path"].endswith("/artifacts")]
    assert artifact["uri"] == "s3://models/finetuned/tiny"
    (version,) = model_registry.versions.values()
    assert version["name"] == "1" and "best_validation_loss" in version["customProperties"]
    assert version["customProperties"]["kfp_run_id"]["string_value"]  # the run's provenance
    assert version["customProperties"]["base_model"]["string_value"] == TINY_MODEL_URI


@pytest.mark.slow
def test_evaluate_export_pipeline_runs_locally_on_an_imported_model(tmp_path, tiny_model):
    import shutil

    from kfp import local

    from kubetune.pipelines.evaluate_export import evaluate_export

    for name in ("checkpoint-1", "checkpoint-2"):
        shutil.copytree(tiny_model, tmp_path / "trained" / name)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    run = evaluate_export(
        trained_model_uri=str(tmp_path / "trained"), data_uri="kubetune://sample-chat", model_uri=str(tiny_model)
    )
    curve = json.loads(Path(run.outputs["loss_curve"].path).read_text())
    assert [p["checkpoint"] for p in curve["points"]] == ["checkpoint-1", "checkpoint-2"]
    assert verify(run.outputs["model"].path) == []
