#!/usr/bin/env bash
# The MLflow tracking server of a vlsa-platform cluster, in the foreground, with basic authentication and
# proxied artifacts: clients (the training workers, `vlsa-platform report`, the UI) send runs, metrics and
# artifacts to this server only, which stores the runs in PostgreSQL and the artifacts in S3; no client needs S3
# credentials for artifacts.
#
# The one script every deployment runs: the AWS head node (infra/terraform), the docker-compose `mlflow` service,
# and the native stack test (tests/infra/test_native_stack.py). What is tested is what is deployed.
#
# Environment (required ones marked *):
#   VLSA_MLFLOW_BACKEND_STORE_URI*  runs and metrics: postgresql://USER:PASSWORD@HOST:5432/DB
#   VLSA_MLFLOW_AUTH_DB_URI*        MLflow's users and permissions (another database, same server or not)
#   VLSA_MLFLOW_ARTIFACTS*          where artifacts go, e.g. s3://BUCKET/mlflow-artifacts
#   VLSA_MLFLOW_ALLOWED_HOSTS*      Host headers the server answers (comma list, e.g. 10.0.1.10:5000,localhost:5000)
#   MLFLOW_AUTH_ADMIN_USERNAME*, MLFLOW_AUTH_ADMIN_PASSWORD*   the admin account (from a secret store); MLflow
#                                   creates it on an empty user database and ignores both afterwards
#   MLFLOW_FLASK_SERVER_SECRET_KEY* the key of the UI's CSRF tokens
#   VLSA_MLFLOW_HOST                where it listens (default 127.0.0.1)
#   VLSA_MLFLOW_PORT                (default 5000)
#   VLSA_MLFLOW_WORKERS             server worker processes (default 2)
#   VLSA_MLFLOW_WORK_DIR            its auth configuration file (no password in it; default /var/lib/vlsa-mlflow)
#   VLSA_MLFLOW_BIN                 the `mlflow` executable (default: the one on PATH)
#   AWS_*                           S3 access for the artifacts (an instance profile on AWS; AWS_ENDPOINT_URL and
#                                   keys for an S3-compatible store)
#
# Unknown users get no permission (default_permission = NO_PERMISSIONS): the admin creates accounts.
# Exit status: 2 for a missing setting (named on stderr); otherwise the server's.
set -euo pipefail

fail() {
    echo "mlflow-server.sh: $*" >&2
    exit 2
}

need() {
    [[ -n "${!1:-}" ]] || fail "$1 is not set ($2)"
}

need VLSA_MLFLOW_BACKEND_STORE_URI "the database of runs and metrics"
need VLSA_MLFLOW_AUTH_DB_URI "the database of MLflow's users"
need VLSA_MLFLOW_ARTIFACTS "where artifacts are stored, e.g. s3://BUCKET/mlflow-artifacts"
need VLSA_MLFLOW_ALLOWED_HOSTS "the Host headers the server answers"
need MLFLOW_AUTH_ADMIN_USERNAME "the admin's user name"
need MLFLOW_AUTH_ADMIN_PASSWORD "the admin's password"
need MLFLOW_FLASK_SERVER_SECRET_KEY "the key of the UI's CSRF tokens"
port="${VLSA_MLFLOW_PORT:-5000}"
[[ "$port" =~ ^[0-9]+$ ]] && ((port > 0 && port < 65536)) || fail "VLSA_MLFLOW_PORT=$port is not a TCP port"
mlflow_bin="${VLSA_MLFLOW_BIN:-$(command -v mlflow || true)}"
[[ -x "$mlflow_bin" ]] || fail "no \`mlflow\` executable (PATH, or VLSA_MLFLOW_BIN)"

work_dir="${VLSA_MLFLOW_WORK_DIR:-/var/lib/vlsa-mlflow}"
mkdir -p "$work_dir"
export MLFLOW_AUTH_CONFIG_PATH="$work_dir/basic_auth.ini"
# The database URI may hold a password: the file is the owner's only.
(
    umask 077
    cat >"$MLFLOW_AUTH_CONFIG_PATH" <<INI
[mlflow]
default_permission = NO_PERMISSIONS
database_uri = ${VLSA_MLFLOW_AUTH_DB_URI}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
INI
)

# The store's URI goes through the environment (MLflow reads MLFLOW_BACKEND_STORE_URI), not the command line,
# which any user of the machine can read.
export MLFLOW_BACKEND_STORE_URI="$VLSA_MLFLOW_BACKEND_STORE_URI"
unset VLSA_MLFLOW_BACKEND_STORE_URI VLSA_MLFLOW_AUTH_DB_URI
exec "$mlflow_bin" server \
    --app-name basic-auth \
    --serve-artifacts \
    --artifacts-destination "$VLSA_MLFLOW_ARTIFACTS" \
    --host "${VLSA_MLFLOW_HOST:-127.0.0.1}" \
    --port "$port" \
    --workers "${VLSA_MLFLOW_WORKERS:-2}" \
    --allowed-hosts "$VLSA_MLFLOW_ALLOWED_HOSTS"
