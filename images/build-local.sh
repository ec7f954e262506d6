#!/usr/bin/env bash
# Build the runtime image from images/Containerfile.runtime with buildah, on a Debian bookworm base made here by
# mmdebstrap, then run three real components inside it (images/smoke_components.py, through kfp.local as a pod runs
# them: validate the embedded spec, prepare the sample data, export the tiny model). No container engine or daemon:
# buildah as root with vfs storage and chroot isolation; only Debian's mirror and PyPI are needed.
#
#   images/build-local.sh           # keeps the base and the runtime image in its storage (to push them later)
#   images/build-local.sh --clean   # removes the images and buildah's storage at the end (the logs stay)
#
# Environment: IMAGE (default localhost/kubetune-runtime:local), KUBETUNE_BUILD_DIR (buildah's storage and the logs,
# default /var/tmp/kubetune-build: a folder it makes, or one it made before (its .kubetune-build marker); any other
# folder that holds something is refused, so --clean never removes storage it did not create), WHEELHOUSE (a folder holding torch's CPU wheel, used in place of
# download.pytorch.org; default /opt/wheels when it holds one), PIP_CERT (a CA bundle for pip in the build, behind a
# TLS-inspecting proxy). A base image already in the storage is reused.
# Prints each stage's time; exits non-zero when any stage fails (its log's tail is shown; 2 when the log shows the
# network out of reach) or when it is interrupted (Ctrl-C, SIGTERM: the running stage is stopped first), and removes
# its containers.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR=${KUBETUNE_BUILD_DIR:-/var/tmp/kubetune-build}
IMAGE=${IMAGE:-localhost/kubetune-runtime:local}
BASE=localhost/kubetune-debian-python:bookworm
CLEAN=0
[[ "${1:-}" == "--clean" ]] && CLEAN=1
if [[ -z "${WHEELHOUSE+set}" ]] && compgen -G "/opt/wheels/torch-*+cpu-*.whl" >/dev/null; then
  WHEELHOUSE=/opt/wheels
fi
WHEELHOUSE=${WHEELHOUSE:-}

for tool in buildah mmdebstrap; do
  command -v "$tool" >/dev/null || { echo "build-local: $tool is not installed (apt-get install $tool)" >&2; exit 2; }
done
[[ $(id -u) == 0 ]] || { echo "build-local: run as root (buildah's chroot isolation and mmdebstrap need it)" >&2; exit 2; }

MARKER=$BUILD_DIR/.kubetune-build
if [[ -d "$BUILD_DIR" && ! -e "$MARKER" && -n "$(ls -A "$BUILD_DIR")" ]]; then
  echo "build-local: $BUILD_DIR holds files build-local.sh did not make (no $MARKER): set KUBETUNE_BUILD_DIR to a new folder" >&2
  exit 2
fi
mkdir -p "$BUILD_DIR/logs"
touch "$MARKER"
LOGS=$BUILD_DIR/logs
BUILDAH=(buildah --root "$BUILD_DIR/storage" --runroot "$BUILD_DIR/run" --storage-driver vfs)
CONTAINERS=$BUILD_DIR/containers  # one container a line, written by the stages (they run in a subshell)
NETWORK_DOWN='Temporary failure in name resolution|Network is unreachable|Could not resolve host'
NETWORK_DOWN+='|Failed to establish a new connection|Connection timed out'  # curl, apt, pip
STAGE="" STAGE_LOG="" STAGE_STARTED=0 STAGE_PID=""
finish() {
  local status=$?
  if ((status)) && [[ -n "$STAGE" ]]; then
    tail -n 40 "$STAGE_LOG" >&2
    echo "build-local: $STAGE failed after $((SECONDS - STAGE_STARTED)) s (full log: $STAGE_LOG)" >&2
    if ((status != 130 && status != 143)) && grep -qE "$NETWORK_DOWN" "$STAGE_LOG"; then
      echo "build-local: the network is out of reach (see the log): check the proxy, Debian's mirror and PyPI" >&2
      status=2
    fi
  fi
  if [[ -f "$CONTAINERS" ]]; then
    while read -r ctr; do "${BUILDAH[@]}" rm "$ctr" >/dev/null 2>&1 || true; done <"$CONTAINERS"
    rm -f "$CONTAINERS"
  fi
  rm -f "$BUILD_DIR/base.tar"
  if ((CLEAN)); then
    "${BUILDAH[@]}" rmi -f "$IMAGE" "$BASE" >/dev/null 2>&1 || true
    rm -rf "$BUILD_DIR/storage" "$BUILD_DIR/run"  # the logs stay
  fi
  exit "$status"
}
# interrupted: stop the running stage (its own process group: mmdebstrap, buildah and what they started) and wait for
# it, so that nothing is left running and --clean removes nothing in use; then the EXIT trap says which stage failed
interrupted() {
  trap - INT TERM
  if [[ -n "$STAGE_PID" ]]; then
    kill -TERM -- "-$STAGE_PID" 2>/dev/null || true
    wait "$STAGE_PID" 2>/dev/null || true
  fi
  echo "build-local: interrupted" >&2
  exit "$1"
}
trap finish EXIT
trap 'interrupted 130' INT
trap 'interrupted 143' TERM

# stage NAME LOG FUNCTION: run FUNCTION (under set -e) with its output in LOG and print its time; on a failure the
# EXIT trap shows the log's tail. FUNCTION runs as a job of its own (set -m: its own process group) that the script
# waits for, so that a signal reaches the trap at once and the trap can stop the whole stage.
stage() {
  STAGE=$1 STAGE_LOG=$2 STAGE_STARTED=$SECONDS
  set -m
  "$3" </dev/null >"$STAGE_LOG" 2>&1 &
  STAGE_PID=$!
  set +m
  wait "$STAGE_PID"
  STAGE_PID=""
  echo "build-local: $STAGE: $((SECONDS - STAGE_STARTED)) s"
  STAGE=""
}

make_base() {
  mmdebstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' bookworm "$BUILD_DIR/base.tar"
  local ctr
  ctr=$("${BUILDAH[@]}" from scratch)
  echo "$ctr" >>"$CONTAINERS"
  "${BUILDAH[@]}" add "$ctr" "$BUILD_DIR/base.tar" /
  "${BUILDAH[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --cmd /bin/bash "$ctr"
  "${BUILDAH[@]}" commit --rm "$ctr" "$BASE"
}

build_runtime() {
  local args=()  # build volumes and arguments
  if [[ -n "$WHEELHOUSE" ]]; then
    args=(--volume "$WHEELHOUSE:/wheelhouse:ro" --build-arg WHEELHOUSE=/wheelhouse --build-arg TORCH_INDEX_URL=)
  fi
  if [[ -n "${PIP_CERT:-}" ]]; then  # pip's CA bundle here (a TLS-inspecting proxy): pip in the build needs it too
    args+=(--volume "$PIP_CERT:/etc/kubetune-build-ca.crt:ro" --build-arg CA_BUNDLE=/etc/kubetune-build-ca.crt)
  fi
  "${BUILDAH[@]}" build --isolation chroot --pull-never --build-arg BASE_IMAGE="$BASE" "${args[@]}" \
    -f "$ROOT/images/Containerfile.runtime" -t "$IMAGE" "$ROOT"
}

run_components() {
  local ctr
  ctr=$("${BUILDAH[@]}" from --pull-never "$IMAGE")
  echo "$ctr" >>"$CONTAINERS"
  "${BUILDAH[@]}" copy "$ctr" "$ROOT/images/smoke_components.py" /tmp/smoke_components.py
  "${BUILDAH[@]}" run --isolation chroot "$ctr" -- python3 /tmp/smoke_components.py /tmp/smoke  # in the image's WORKDIR
}

started=$SECONDS
if "${BUILDAH[@]}" inspect --type image "$BASE" >/dev/null 2>&1; then
  echo "build-local: base image $BASE: already built"
else
  stage "base image $BASE (mmdebstrap bookworm + python3)" "$LOGS/base.log" make_base
fi
stage "runtime image $IMAGE (images/Containerfile.runtime${WHEELHOUSE:+, torch from $WHEELHOUSE})" "$LOGS/build.log" build_runtime
echo "build-local: image size: $("${BUILDAH[@]}" images --format '{{.Size}}' "$IMAGE")"
stage "three components inside it" "$LOGS/components.log" run_components
grep -E '^(validate-kwargs|prepare-data|export-model|three components)' "$LOGS/components.log"
echo "build-local: done in $((SECONDS - started)) s"
