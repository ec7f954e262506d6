"""The registry credentials reach the export step only as a reference: the dockerconfigjson secret named by
``registry_auth_secret``, mounted (optional) as the file skopeo reads through REGISTRY_AUTH_FILE."""

from __future__ import annotations

import importlib

import pytest
import yaml

from kubetune.pipelines.kubernetes import REGISTRY_AUTH_DIR


@pytest.mark.parametrize("name", ["finetune", "evaluate_export"])
def test_the_export_step_mounts_the_registry_auth_secret_as_its_auth_file(name, tmp_path):
    from kfp import compiler

    compiler.Compiler().compile(getattr(importlib.import_module(f"kubetune.pipelines.{name}"), name), str(tmp_path / "p.yaml"))
    spec, platform = yaml.safe_load_all((tmp_path / "p.yaml").read_text())
    kubernetes = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-export-model"]
    (volume,) = [v for v in kubernetes["secretAsVolume"] if v["mountPath"] == REGISTRY_AUTH_DIR]
    fed_by = volume["secretNameParameter"]["componentInputParameter"]  # in finetune, from inside the gate's dsl.If
    assert fed_by in ("registry_auth_secret", "pipelinechannel--registry_auth_secret") and volume["optional"]
    env = {e["name"]: e["value"] for e in spec["deploymentSpec"]["executors"]["exec-export-model"]["container"]["env"]}
    assert env["REGISTRY_AUTH_FILE"] == f"{REGISTRY_AUTH_DIR}/.dockerconfigjson"
    assert spec["root"]["inputDefinitions"]["parameters"]["registry_auth_secret"]["defaultValue"] == "kubetune-oci-auth"
