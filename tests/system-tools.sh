#!/usr/bin/env bash
# The system programs some tests use, from Debian's packages: skopeo (pushes and pulls OCI modelcars) and
# docker-registry (a real OCI registry the OCI export tests start on 127.0.0.1). Installed only when missing,
# and only as root; otherwise it says what to install, and the tests that need them are skipped with that reason.
set -uo pipefail
missing=()
command -v skopeo >/dev/null || missing+=(skopeo)
command -v docker-registry >/dev/null || missing+=(docker-registry)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null && exit 0
  echo "tests/system-tools.sh: could not install ${missing[*]} with apt-get" >&2
  exit 1
fi
echo "tests/system-tools.sh: ${missing[*]} not installed (Debian packages; install as root): the tests that need them are skipped" >&2
exit 0
