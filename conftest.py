import collections
import itertools
import json
import os
import socket

import pytest

# One OpenMP thread per process, for this process and every step, torchrun and node it starts (set before torch is
# imported): the tiny model's ops are too small to gain from a second thread, and on two shared cores (pytest beside
# a step, two runs or two TrainJob nodes at once, a busy CI) threads spinning at barriers for a descheduled peer made
# training steps 3-6x slower. A value the environment gives wins.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from kubetune.embedded.tiny_model import write_tiny_model
from tests.support import standins


def pytest_collection_modifyitems(config, items):
    if os.environ.get("PYTEST_XDIST_WORKER"):  # every worker collects alike, so each sorts to the same order
        _heaviest_modules_first(items)
    _skip_gpu_tests(items)


def _heaviest_modules_first(items) -> None:
    """Under ``-n 2 --dist loadfile`` each module runs whole on one worker (its module-scoped fixtures, a training
    run or a prepared data set, are built once) and ``--no-loadscope-reorder`` hands the modules out in this order:
    the modules with the most ``slow`` tests first, so that none of them starts while the other worker has nothing
    left. A stable sort: the tests of a module keep their order."""
    slow = collections.Counter(item.path for item in items if item.get_closest_marker("slow"))
    items.sort(key=lambda item: -slow[item.path])


def _skip_gpu_tests(items) -> None:
    """Tests marked ``gpu`` need CUDA: where it is absent they are skipped, with the reason (the GPU kit runs them)."""
    marked = [item for item in items if item.get_closest_marker("gpu")]
    if not marked:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none here); benchmarks/gpu_kit.py runs it on a GPU machine")
    for item in marked:
        item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """The embedded tiny model, generated once per test session (offline, about a second)."""
    return write_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture(scope="session")
def prepared_validation(tmp_path_factory, tiny_model):
    """Makes a prepared validation set (the prepare step's layout) of the first ``samples`` bundled samples, half held out."""
    from kubetune.embedded.sample_data import SAMPLE_DATA
    from kubetune.steps.prepare import prepare

    def make(samples: int):
        out = tmp_path_factory.mktemp("prepared")
        with SAMPLE_DATA.open() as lines:
            (out / "sample.jsonl").write_text("".join(itertools.islice(lines, samples)))
        prepare(str(out / "sample.jsonl"), str(tiny_model), out / "train", out / "validation", validation_ratio=0.5, num_proc=1)
        return out / "validation"

    return make


@pytest.fixture(scope="session")
def moto_endpoint():
    """A real S3-compatible HTTP server on loopback (moto), for boto3 to talk to over the wire."""
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3(moto_endpoint, monkeypatch):
    """A boto3 S3 client against the moto server (emptied first), with the environment set the way a pod's would be."""
    import urllib.request

    import boto3

    urllib.request.urlopen(urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST"), timeout=10).close()
    for name, value in {
        "AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return boto3.client("s3")


@pytest.fixture
def faulty_proxy(moto_endpoint):
    """Make a proxy in front of the moto server that fails chosen requests (tests/support/standins.py)."""
    proxies = []

    def make(fault):
        proxy = standins.FaultyProxy(moto_endpoint, fault).__enter__()
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.__exit__(None, None, None)


@pytest.fixture
def model_registry():
    """A recording stand-in of the Model Registry REST API (tests/support/standins.py): no real one runs here."""
    with standins.RegistryStandIn() as standin:
        yield standin


@pytest.fixture
def kfp_server(monkeypatch):
    """A recording stand-in of the KFP v2beta1 REST API (tests/support/standins.py): no KFP API server runs here."""
    with standins.KfpStandIn() as standin:
        monkeypatch.setenv("KF_PIPELINES_ENDPOINT", standin.url)
        yield standin


@pytest.fixture
def kube_api(tmp_path):
    """Starts a recording stand-in of the Kubernetes API (tests/support/standins.py; no cluster runs here) and
    returns it with a kubeconfig that points at it: ``make(states, log)``."""
    started = []

    def make(states, log: str = ""):
        standin = standins.KubeStandIn(states, log).__enter__()
        started.append(standin)
        kubeconfig = tmp_path / f"kubeconfig-{len(started)}"
        kubeconfig.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "c", "cluster": {"server": standin.url}}],
                    "users": [{"name": "u", "user": {"token": "launcher-token"}}],
                    "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u", "namespace": standin.namespace}}],
                    "current-context": "x",
                }
            )
        )
        standin.kubeconfig = str(kubeconfig)
        return standin

    yield make
    for standin in started:
        standin.__exit__(None, None, None)
