#!/usr/bin/env bash
# One Ray node of a vlsa-platform cluster, in the foreground: `ray-node.sh head` or `ray-node.sh worker`.
#
# The one script every deployment runs: the AWS nodes (infra/terraform, through systemd and the Ray autoscaler),
# the docker-compose services, and the tests, which start a head with it on 127.0.0.1
# (tests/orchestration/ray_head.py). What is tested is what is deployed.
#
# Token authentication is always on: RAY_AUTH_MODE=token is set here whatever the environment says, and the
# token is read from the file VLSA_RAY_TOKEN_FILE (never from the repository or the command line, which `ps`
# shows). Every port is fixed (each overridable) so security groups can name them; infra/README.md lists them.
#
# Environment (required ones marked *):
#   VLSA_RAY_TOKEN_FILE*    file holding the cluster's Ray token
#   VLSA_NODE_IP*           address Ray binds and advertises (the node's private IP; 127.0.0.1 for one machine)
#   VLSA_HEAD_ADDRESS*      worker only: the head's GCS address, HOST:PORT
#   VLSA_ACCELERATOR_TYPE   a class of platform/vlsa_platform/cluster/accelerators.py (A10G, A100-80G, H100, ...):
#                           the node advertises the resource accelerator_type:<NAME>, one per GPU
#   VLSA_NUM_CPUS, VLSA_NUM_GPUS   what the node offers (Ray detects both otherwise)
#   VLSA_RESOURCES          more custom resources, JSON (merged with the accelerator's)
#   VLSA_AUTOSCALING_CONFIG head only: the Ray autoscaler's cluster YAML (infra/terraform renders it)
#   VLSA_RAY_TEMP_DIR       Ray's --temp-dir (sessions, logs, sockets)
#   VLSA_OBJECT_STORE_BYTES size of the node's object store
#   VLSA_DASHBOARD_HOST     head only: where the dashboard and Jobs API listen (default: VLSA_NODE_IP)
#   ports: VLSA_RAY_PORT (6379), VLSA_DASHBOARD_PORT (8265), VLSA_CLIENT_PORT (10001),
#          VLSA_DASHBOARD_AGENT_PORT (52365), VLSA_DASHBOARD_AGENT_GRPC_PORT (52366),
#          VLSA_RUNTIME_ENV_AGENT_PORT (52367), VLSA_METRICS_PORT (52368), VLSA_NODE_MANAGER_PORT (52369),
#          VLSA_OBJECT_MANAGER_PORT (52370), VLSA_MIN_WORKER_PORT (10002), VLSA_MAX_WORKER_PORT (19999)
#   VLSA_RAY_BIN            the `ray` executable (default: the one on PATH)
#
# Exit status: 2 for a missing or malformed setting (named on stderr); otherwise `ray start`'s.
set -euo pipefail

fail() {
    echo "ray-node.sh: $*" >&2
    exit 2
}

need() {
    [[ -n "${!1:-}" ]] || fail "$1 is not set ($2)"
}

port() {
    local value="${!1:-$2}"
    [[ "$value" =~ ^[0-9]+$ ]] && ((value > 0 && value < 65536)) || fail "$1=$value is not a TCP port"
    echo "$value"
}

role="${1:-}"
[[ "$role" == head || "$role" == worker ]] || fail "usage: ray-node.sh head|worker (got '${role}')"

need VLSA_RAY_TOKEN_FILE "the file holding the cluster's Ray token"
[[ -s "$VLSA_RAY_TOKEN_FILE" ]] || fail "VLSA_RAY_TOKEN_FILE=$VLSA_RAY_TOKEN_FILE is missing or empty"
need VLSA_NODE_IP "the address this node binds and advertises"
ray_bin="${VLSA_RAY_BIN:-$(command -v ray || true)}"
[[ -x "$ray_bin" ]] || fail "no \`ray\` executable (PATH, or VLSA_RAY_BIN)"

resources="${VLSA_RESOURCES:-}"
[[ "${resources//[[:space:]]/}" == "{}" ]] && resources=""
[[ -z "$resources" || "$resources" =~ ^[[:space:]]*\{.*\}[[:space:]]*$ ]] || fail "VLSA_RESOURCES must be a JSON object"
if [[ -n "${VLSA_ACCELERATOR_TYPE:-}" ]]; then
    [[ "$VLSA_ACCELERATOR_TYPE" =~ ^[A-Za-z0-9_.-]+$ ]] || fail "VLSA_ACCELERATOR_TYPE=$VLSA_ACCELERATOR_TYPE"
    count="${VLSA_NUM_GPUS:-1}"
    accelerator="\"accelerator_type:${VLSA_ACCELERATOR_TYPE}\": ${count}"
    if [[ -n "$resources" ]]; then
        resources="{${accelerator}, ${resources#\{}"
    else
        resources="{${accelerator}}"
    fi
fi

args=(
    start --block --disable-usage-stats
    "--node-ip-address=${VLSA_NODE_IP}"
    "--dashboard-agent-listen-port=$(port VLSA_DASHBOARD_AGENT_PORT 52365)"
    "--dashboard-agent-grpc-port=$(port VLSA_DASHBOARD_AGENT_GRPC_PORT 52366)"
    "--runtime-env-agent-port=$(port VLSA_RUNTIME_ENV_AGENT_PORT 52367)"
    "--metrics-export-port=$(port VLSA_METRICS_PORT 52368)"
    "--node-manager-port=$(port VLSA_NODE_MANAGER_PORT 52369)"
    "--object-manager-port=$(port VLSA_OBJECT_MANAGER_PORT 52370)"
    "--min-worker-port=$(port VLSA_MIN_WORKER_PORT 10002)"
    "--max-worker-port=$(port VLSA_MAX_WORKER_PORT 19999)"
)
if [[ "$role" == head ]]; then
    args+=(
        --head
        "--port=$(port VLSA_RAY_PORT 6379)"
        --include-dashboard=true
        "--dashboard-host=${VLSA_DASHBOARD_HOST:-$VLSA_NODE_IP}"
        "--dashboard-port=$(port VLSA_DASHBOARD_PORT 8265)"
        "--ray-client-server-port=$(port VLSA_CLIENT_PORT 10001)"
    )
    if [[ -n "${VLSA_AUTOSCALING_CONFIG:-}" ]]; then
        [[ -f "$VLSA_AUTOSCALING_CONFIG" ]] || fail "VLSA_AUTOSCALING_CONFIG=$VLSA_AUTOSCALING_CONFIG: no such file"
        args+=("--autoscaling-config=${VLSA_AUTOSCALING_CONFIG}")
    fi
else
    need VLSA_HEAD_ADDRESS "the head's GCS address, HOST:PORT"
    args+=("--address=${VLSA_HEAD_ADDRESS}")
fi
[[ -n "${VLSA_NUM_CPUS:-}" ]] && args+=("--num-cpus=${VLSA_NUM_CPUS}")
[[ -n "${VLSA_NUM_GPUS:-}" ]] && args+=("--num-gpus=${VLSA_NUM_GPUS}")
[[ -n "$resources" ]] && args+=("--resources=${resources}")
[[ -n "${VLSA_RAY_TEMP_DIR:-}" ]] && args+=("--temp-dir=${VLSA_RAY_TEMP_DIR}")
[[ -n "${VLSA_OBJECT_STORE_BYTES:-}" ]] && args+=("--object-store-memory=${VLSA_OBJECT_STORE_BYTES}")

export RAY_AUTH_MODE=token
export RAY_AUTH_TOKEN_PATH="$VLSA_RAY_TOKEN_FILE"
unset RAY_AUTH_TOKEN RAY_ADDRESS RAY_API_SERVER_ADDRESS
export RAY_USAGE_STATS_ENABLED=0
case "$VLSA_NODE_IP" in
# A one-machine cluster: Ray would replace a loopback address with the machine's outward one (and ask the
# network which that is); this switch keeps every Ray address on loopback.
127.* | localhost) export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 ;;
esac

exec "$ray_bin" "${args[@]}"
