#!/usr/bin/env bash
# Run once by the postgres image on an empty data volume (/docker-entrypoint-initdb.d): MLflow's own login
# role, not a superuser, owning the two databases mlflow-server.sh is given: `mlflow` (runs, metrics) and
# `mlflow_auth` (basic-auth users and permissions). The password comes from the environment (MLFLOW_DB_PASSWORD,
# from .env), read by psql itself (\getenv, psql 15+): it is never written in this file nor shown on a
# command line.
set -euo pipefail

: "${MLFLOW_DB_PASSWORD:?MLFLOW_DB_PASSWORD is not set (the password of the mlflow database role)}"

psql --no-psqlrc -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres <<'SQL'
\getenv mlflow_password MLFLOW_DB_PASSWORD
CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_password';
CREATE DATABASE mlflow OWNER mlflow;
CREATE DATABASE mlflow_auth OWNER mlflow;
REVOKE ALL ON DATABASE mlflow, mlflow_auth FROM PUBLIC;
SQL
