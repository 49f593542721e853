#!/usr/bin/env bash
# Offline validation of everything under deploy/ (no cluster, no Docker engine):
#
#   kustomize   kubectl kustomize renders k8s/base, overlays/dev and overlays/prod
#               (prod with a throwaway JWT secret file)
#   schemas     kubernetes-validate --strict checks every rendered object against
#               the Kubernetes 1.29 and 1.37 schemas (custom resources: below)
#   manifests   references (ConfigMaps, Secrets, PVCs, Services, ports, selectors),
#               gateway probes, preStop drain and grace period, msg-service
#               replicas 1 + Recreate + PVC, securityContext and resources,
#               ScyllaCluster / ServiceMonitor shape, what each overlay must be
#   rules       PrometheusRule structure, `promtool check rules` and the unit
#               tests of deploy/k8s/components/monitoring/tests with `promtool test rules`
#   metrics     every metric name in the alert rules and the Grafana dashboard is
#               exported by the Rust code (metrics::counter!/gauge!/histogram!) or
#               is a known external one (up, kube-state-metrics, kubelet, redis_exporter)
#   dashboard   the Grafana dashboard's JSON and structure
#   haproxy     haproxy -c on haproxy/haproxy-l7.cfg (with a throwaway self-signed
#               certificate), haproxy/haproxy-l4.cfg and docker/haproxy.cfg
#   nginx       nginx -t on nginx/nginx.conf under a temporary prefix
#   compose     docker/docker-compose.yml against the compose-spec JSON schema
#               (check-jsonschema) and against the files and services it names
#   docker      the Dockerfiles' structure (hadolint is not available here)
#
# Installs what it needs, once, under ~/.cache/chat-deploy-validate (a Python
# venv with kubernetes-validate, check-jsonschema and PyYAML; promtool and, when
# no nginx is on PATH, nginx, unpacked from their Debian packages - no service
# is installed or started). Needs kubectl (for `kubectl kustomize`), haproxy,
# openssl, python3. Safe to run again; after the first run it takes seconds.
set -euo pipefail
export PYTHONDONTWRITEBYTECODE=1   # leave no __pycache__ in deploy/validate

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
deploy="$root/deploy"
cache="${CHAT_DEPLOY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/chat-deploy-validate}"
venv="$cache/venv"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

passed=0
failed=0
skipped=0
failures=()

log() { printf '\n==> %s\n' "$*"; }
die() { echo "deploy/validate.sh: $*" >&2; exit 2; }

# Runs one named check; its output goes to the terminal, its result to the tally.
check() {
  local name="$1"; shift
  log "$name"
  if "$@"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    failures+=("$name")
    echo "FAILED: $name" >&2
  fi
}

# ------------------------------------------------------------------ tools

python_requirements='kubernetes-validate==1.37.0
check-jsonschema==0.39.0
PyYAML>=6.0.2,<7'

ensure_venv() {
  local stamp="$venv/.requirements"
  if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$python_requirements" ]; then
    return 0
  fi
  log "installing the Python checkers into $venv"
  rm -rf "$venv"
  mkdir -p "$cache"
  python3 -m venv "$venv"
  printf '%s\n' "$python_requirements" >"$work/requirements.txt"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$work/requirements.txt"
  printf '%s' "$python_requirements" >"$stamp"
}

# Unpacks one file of a Debian package into the cache (no install, no service).
debian_tool() {
  local package="$1" path="$2" dest="$cache/debian/$1"
  if [ -x "$dest$path" ]; then echo "$dest$path"; return 0; fi
  local dl="$work/dl-$package"
  mkdir -p "$dl" "$dest"
  chmod 777 "$dl"   # apt's download sandbox user writes here
  if ! (cd "$dl" && apt-get download "$package" >/dev/null 2>&1); then
    local sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq >/dev/null
    (cd "$dl" && apt-get download "$package" >/dev/null 2>&1) || die "cannot download the Debian package $package"
  fi
  dpkg-deb -x "$dl"/"$package"_*.deb "$dest"
  [ -x "$dest$path" ] || die "$package has no $path"
  echo "$dest$path"
}

# kubectl is not in Debian's archive in a version whose kustomize renders these
# files (Debian's kubernetes-client 1.20 is too old and conflicts with the
# Google Cloud CLI package that ships it): without it the checks of rendered
# manifests are skipped, and said so, never passed silently.
kubectl_missing=""
command -v kubectl >/dev/null ||
  kubectl_missing="kubectl not found (it ships in the Google Cloud CLI package 'kubectl', or from the Kubernetes release downloads)"
command -v haproxy >/dev/null || die "haproxy is needed (apt-get install haproxy)"
command -v openssl >/dev/null || die "openssl is needed"
ensure_venv
py="$venv/bin/python"
promtool="$(command -v promtool || debian_tool prometheus /usr/bin/promtool)"
nginx="$(command -v nginx || debian_tool nginx /usr/sbin/nginx)"

# ------------------------------------------------------------------ checks

render() {
  # prod reads its JWT secret from a file that never enters git: render a copy
  # of deploy/k8s with a throwaway one.
  cp -r "$deploy/k8s" "$work/k8s"
  head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$work/k8s/overlays/prod/secrets/hs256-secret"
  kubectl kustomize "$work/k8s/base" >"$work/base.yaml" &&
    kubectl kustomize "$work/k8s/overlays/dev" >"$work/dev.yaml" &&
    kubectl kustomize "$work/k8s/overlays/prod" >"$work/prod.yaml" &&
    echo "rendered base ($(grep -c '^kind:' "$work/base.yaml") objects), dev ($(grep -c '^kind:' "$work/dev.yaml")), prod ($(grep -c '^kind:' "$work/prod.yaml"))"
}

schemas() {
  local version out ok=0
  for version in 1.29.0 1.37.0; do
    out="$("$venv/bin/kubernetes-validate" --strict --quiet -k "$version" "$work/base.yaml" "$work/dev.yaml" "$work/prod.yaml" 2>&1)" || ok=1
    # Custom resources (ScyllaCluster, ServiceMonitor, PrometheusRule) have no
    # schema here: the manifests and rules checks cover them.
    grep -v "Couldn't find schema for kind \(ScyllaCluster\|ServiceMonitor\|PrometheusRule\) " <<<"$out" | grep . && ok=1
    [ "$ok" = 0 ] && echo "Kubernetes $version: every built-in object validates (strict)"
  done
  return "$ok"
}

rules() {
  "$py" "$deploy/validate/check.py" rules "$root" "$work/rules" &&
    "$promtool" check rules "$work/rules/rules-full.yaml" &&
    cp "$deploy/k8s/components/monitoring/tests/"*.yaml "$work/rules/" &&
    (cd "$work/rules" && "$promtool" test rules ./*.test.yaml)
}

haproxy_configs() {
  local certs="$work/certs"
  mkdir -p "$certs"
  openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=chat.example.com \
    -keyout "$certs/chat.key" -out "$certs/chat.crt" >/dev/null 2>&1
  cat "$certs/chat.crt" "$certs/chat.key" >"$certs/chat.pem"
  sed "s#/etc/haproxy/certs/chat.pem#$certs/chat.pem#" "$deploy/haproxy/haproxy-l7.cfg" >"$work/haproxy-l7.cfg"
  local cfg out ok=0
  for cfg in "$work/haproxy-l7.cfg" "$deploy/haproxy/haproxy-l4.cfg" "$deploy/docker/haproxy.cfg"; do
    if out="$(haproxy -c -f "$cfg" 2>&1)"; then
      # A warning is a mistake waiting to happen: fail on it too.
      if grep -q '\[WARNING\]' <<<"$out"; then echo "$out"; ok=1; else echo "$(basename "$cfg"): valid"; fi
    else
      echo "$out"; ok=1
    fi
  done
  return "$ok"
}

nginx_config() {
  local prefix="$work/nginx" certs="$work/certs"
  mkdir -p "$prefix" "$certs"
  [ -f "$certs/chat.crt" ] || openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=chat.example.com \
    -keyout "$certs/chat.key" -out "$certs/chat.crt" >/dev/null 2>&1
  # The same file with its paths moved under the prefix (certificates, pid,
  # logs, temp dirs); nothing else changes.
  local temps="client_body_temp_path $prefix/body; proxy_temp_path $prefix/proxy; fastcgi_temp_path $prefix/fastcgi; uwsgi_temp_path $prefix/uwsgi; scgi_temp_path $prefix/scgi;"
  sed -e "s#/etc/nginx/certs/#$certs/#" -e "s#/run/nginx.pid#$prefix/nginx.pid#" \
    -e "s#/var/log/nginx/#$prefix/#" -e "s#^http {#http {\n    $temps#" \
    "$deploy/nginx/nginx.conf" >"$prefix/nginx.conf"
  "$nginx" -t -q -p "$prefix/" -c "$prefix/nginx.conf" -e "$prefix/error.log" && echo "nginx.conf: valid ($("$nginx" -v 2>&1))"
}

compose() {
  "$venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec "$deploy/docker/docker-compose.yml" &&
    "$py" "$deploy/validate/check.py" compose "$root"
}

if [ -n "$kubectl_missing" ]; then
  skipped=$((skipped + 3))
  echo "SKIP: kustomize build, Kubernetes schemas, manifest references: $kubectl_missing" >&2
else
  check "kustomize build (base, dev, prod)" render
fi
if [ -s "$work/prod.yaml" ]; then
  check "Kubernetes schemas (kubernetes-validate)" schemas
  check "manifest references and policies" "$py" "$deploy/validate/check.py" manifests \
    "base=$work/base.yaml" "dev=$work/dev.yaml" "prod=$work/prod.yaml"
fi
check "alert rules (structure, promtool check + unit tests)" rules
check "metric names in rules and dashboard vs the code" "$py" "$deploy/validate/check.py" metrics "$root"
check "Grafana dashboard" "$py" "$deploy/validate/check.py" dashboard "$root"
check "HAProxy configs (haproxy -c)" haproxy_configs
check "nginx config (nginx -t)" nginx_config
check "docker-compose.yml" compose
check "Dockerfiles" "$py" "$deploy/validate/check.py" dockerfiles "$root"
check "shell syntax" bash -n "$deploy/validate.sh"

echo
if [ "$failed" -gt 0 ]; then
  echo "deploy/validate.sh failed: ${failures[*]}" >&2
fi
echo "deploy: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
