"""Submitting a TrainJob and following it to the end, through the Kubernetes API.

- Queued by Kueue (suspended) or waiting for nodes is not a failure: it counts against ``Limits.queued_timeout_s``.
- Running counts against ``Limits.running_timeout_s``; node 0's log is streamed into this step's log meanwhile.
- Complete: done. Failed, or suspended again after running (evicted, pre-empted): the step fails with the
  job's own reason and message.
- SIGTERM (the KFP run is cancelled) deletes the TrainJob before the step ends.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubetune.cluster.trainjob import API_GROUP, API_VERSION, NODE, PLURAL
from kubetune.errors import KubetuneError, Problem

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
NODE_ZERO = (
    "jobset.sigs.k8s.io/jobset-name={name},jobset.sigs.k8s.io/replicatedjob-name="
    + NODE
    + ",batch.kubernetes.io/job-completion-index=0"
)
NODES = "jobset.sigs.k8s.io/jobset-name={name}"


@dataclass(frozen=True)
class Limits:
    """How long the launcher waits; 0 means no limit."""

    queued_timeout_s: float = 24 * 3600.0  # queued in Kueue or waiting for nodes
    running_timeout_s: float = 0.0  # training; the job's own activeDeadlineSeconds is another way
    poll_s: float = 10.0


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class Phase:
    state: str  # queued | starting | running | succeeded | failed
    reason: str = ""
    message: str = ""

    def __str__(self) -> str:
        detail = ": ".join(x for x in (self.reason, self.message) if x)
        return f"{self.state} ({detail})" if detail else self.state


def phase(job: dict[str, Any]) -> Phase:
    """Where a TrainJob stands, from its status alone."""
    status = job.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or []}

    def true(kind: str) -> dict | None:
        condition = conditions.get(kind)
        return condition if condition and condition.get("status") == "True" else None

    for kind, state in (("Complete", "succeeded"), ("Failed", "failed"), ("Suspended", "queued")):
        if condition := true(kind):
            return Phase(state, condition.get("reason", ""), condition.get("message", ""))
    jobs = status.get("jobsStatus") or []
    if any(j.get("ready", 0) or j.get("succeeded", 0) for j in jobs):
        return Phase("running")
    return Phase("starting", "waiting for nodes")


def unscheduled(api: KubeApi, name: str) -> str:
    """Why the job's pods are not running yet, from the scheduler's own words (e.g. not enough GPUs)."""
    why = set()
    for pod in api.pods(NODES.format(name=name)):
        for condition in pod.status.conditions or []:
            if condition.type == "PodScheduled" and condition.status == "False":
                why.add(f"{condition.reason}: {condition.message}" if condition.message else condition.reason)
    return "; ".join(sorted(why))


class KubeApi:
    """The few Kubernetes calls the launcher makes (and the Role in pipelines/manifests grants)."""

    def __init__(self, api_client, namespace: str):
        from kubernetes import client

        self.namespace = namespace
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)

    @classmethod
    def connect(cls, kubeconfig: str | None = None, namespace: str | None = None) -> KubeApi:
        """The pod's ServiceAccount (in-cluster config) by default; a kubeconfig only when one is given."""
        from kubernetes import client, config

        if kubeconfig and Path(kubeconfig).is_file():
            api_client = config.new_client_from_config(config_file=kubeconfig)
            _, context = config.list_kube_config_contexts(config_file=kubeconfig)
            namespace = namespace or context.get("context", {}).get("namespace")
        else:
            configuration = client.Configuration()
            loader = config.incluster_config.InClusterConfigLoader(
                token_filename=config.incluster_config.SERVICE_TOKEN_FILENAME,
                cert_filename=config.incluster_config.SERVICE_CERT_FILENAME,
                environ=os.environ,  # the environment as it is now (the loader's default is bound at import)
            )
            try:
                loader.load_and_set(configuration)
            except config.ConfigException as error:
                raise KubetuneError(
                    [Problem("kubeconfig", f"none given, and not in a cluster ({error})", "mount the kubeconfig_secret")],
                    "cannot reach the Kubernetes API",
                ) from None
            api_client = client.ApiClient(configuration)
            namespace = namespace or _pod_namespace()
        return cls(api_client, namespace or "default")

    def create(self, job: dict) -> dict:
        return self.custom.create_namespaced_custom_object(API_GROUP, API_VERSION, self.namespace, PLURAL, job)

    def get(self, name: str) -> dict | None:
        from kubernetes.client.exceptions import ApiException

        try:
            return self.custom.get_namespaced_custom_object(API_GROUP, API_VERSION, self.namespace, PLURAL, name)
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def delete(self, name: str, wait_s: float = 0.0) -> None:
        """Delete the TrainJob (its pods with it); ``wait_s``: wait up to that long until it is gone."""
        from kubernetes.client.exceptions import ApiException

        try:
            self.custom.delete_namespaced_custom_object(
                API_GROUP, API_VERSION, self.namespace, PLURAL, name, propagation_policy="Foreground"
            )
        except ApiException as error:
            if error.status != 404:
                raise
        deadline = time.monotonic() + wait_s
        while wait_s and self.get(name) is not None:
            if time.monotonic() > deadline:
                raise KubetuneError([Problem(f"TrainJob {self.namespace}/{name}", f"still being deleted after {wait_s:g} s")])
            time.sleep(min(1.0, wait_s / 10))

    def pods(self, selector: str) -> list:
        return self.core.list_namespaced_pod(self.namespace, label_selector=selector).items

    def log_stream(self, pod: str):
        return self.core.read_namespaced_pod_log(pod, self.namespace, container=NODE, follow=True, _preload_content=False)


def _pod_namespace() -> str | None:
    if os.environ.get("KFP_NAMESPACE"):
        return os.environ["KFP_NAMESPACE"]
    path = SERVICE_ACCOUNT / "namespace"
    return path.read_text().strip() if path.is_file() else None


class Cancelled(BaseException):
    """SIGTERM arrived: the KFP run is being cancelled."""


@contextmanager
def cancel_on_sigterm():
    def handler(signum, frame):
        raise Cancelled()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class LogFollower(threading.Thread):
    """Streams node 0's log into this step's log; follows a restarted container from its start."""

    def __init__(self, api: KubeApi, name: str, out=None, poll_s: float = 10.0):
        super().__init__(daemon=True)
        self.api, self.name, self.out, self.poll_s = api, name, out or sys.stdout, poll_s
        self.stopped = threading.Event()

    def run(self) -> None:
        streamed = None
        while not self.stopped.is_set():
            try:
                pods = self.api.pods(NODE_ZERO.format(name=self.name))
                pod = pods[0] if pods else None
                if pod is not None and pod.status.phase in ("Running", "Succeeded", "Failed"):
                    restarts = sum(c.restart_count for c in pod.status.container_statuses or [])
                    if (pod.metadata.name, restarts) != streamed:
                        streamed = (pod.metadata.name, restarts)
                        self._stream(pod.metadata.name)
                        continue
            except Exception as error:  # a log is a convenience: never fail the step for it
                print(f"[kubetune] log of node 0 unavailable: {error}", file=self.out, flush=True)
            self.stopped.wait(self.poll_s)

    def _stream(self, pod: str) -> None:
        response = self.api.log_stream(pod)
        try:
            for chunk in response.stream(4096, decode_content=True):
                self.out.write(chunk.decode("utf-8", "replace"))
                self.out.flush()
                if self.stopped.is_set():
                    break
        finally:
            response.release_conn()

    def stop(self, drain_s: float = 0.0) -> None:
        """Stop following; ``drain_s``: first let the stream of a finished container end by itself."""
        self.join(timeout=drain_s)
        self.stopped.set()
        self.join(timeout=5)


def _failure(name: str, namespace: str, title: str, message: str, hint: str | None = None) -> KubetuneError:
    return KubetuneError([Problem(f"TrainJob {namespace}/{name}", message, hint)], title)


def wait(
    api: KubeApi,
    name: str,
    limits: Limits = DEFAULT_LIMITS,
    say: Callable[[str], None] = print,
    logs: bool = True,
) -> Phase:
    """Follow the TrainJob ``name`` until it completes; raise with its own reason when it does not."""
    follower = LogFollower(api, name, poll_s=limits.poll_s) if logs else None
    last: Phase | None = None
    waiting_since = time.monotonic()
    running_since: float | None = None
    where = f"{api.namespace}/{name}"
    try:
        with cancel_on_sigterm():
            while True:
                job = api.get(name)
                if job is None:
                    raise _failure(name, api.namespace, "TrainJob gone", "was deleted while the step waited for it")
                now = phase(job)
                if now.state == "starting":
                    now = Phase("starting", now.reason, unscheduled(api, name))
                if now != last:
                    say(f"[kubetune] TrainJob {where}: {now}")
                    last = now
                if now.state == "succeeded":
                    if follower is not None and follower.is_alive():
                        follower.stop(drain_s=limits.poll_s)  # the end of node 0's log
                    return now
                if now.state == "failed":
                    raise _failure(name, api.namespace, "TrainJob failed", ": ".join(filter(None, (now.reason, now.message))))
                if now.state == "queued" and running_since is not None:
                    api.delete(name)  # else the queue would restart it behind the step's back
                    raise _failure(
                        name,
                        api.namespace,
                        "TrainJob evicted",
                        f"suspended again after it had started: {now}",
                        "a retry of the step resumes from the last checkpoint on the workspace",
                    )
                if now.state == "running":
                    if running_since is None:
                        running_since = time.monotonic()
                        if follower is not None:
                            follower.start()
                    elif limits.running_timeout_s and time.monotonic() - running_since > limits.running_timeout_s:
                        api.delete(name)
                        raise _failure(
                            name,
                            api.namespace,
                            "TrainJob too long",
                            f"still running after {limits.running_timeout_s:g} s (deleted)",
                        )
                elif limits.queued_timeout_s and time.monotonic() - waiting_since > limits.queued_timeout_s:
                    api.delete(name)
                    raise _failure(
                        name,
                        api.namespace,
                        "TrainJob never started",
                        f"still {now} after {limits.queued_timeout_s:g} s (deleted)",
                        "raise queued_timeout_s, or free GPUs / quota in its queue",
                    )
                time.sleep(limits.poll_s)
    except Cancelled:
        api.delete(name)
        say(f"[kubetune] run cancelled: TrainJob {where} deleted")
        raise SystemExit(143) from None
    finally:
        if follower is not None and follower.is_alive():
            follower.stop()
