#!/usr/bin/env bash
# `make ui`: the Airflow UI on the demo's metadata (after `make demo`).
#
# Usage: infra/airflow-ui.sh [DEMO_DIR]     (default var/demo; env UI_PORT, UI_LOG_PORT, VENV_BIN)
#
# Three processes, not `airflow standalone`: standalone also starts a triggerer (this DAG
# never defers) and prints its generated password only the first time; here every
# component's settings are explicit below, each writes its own log file, and Ctrl-C (or
# SIGTERM) stops all three.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
demo_dir=$(cd "${1:-var/demo}" 2>/dev/null && pwd) || {
    echo "no demo data at ${1:-var/demo}: run \`make demo\` first" >&2
    exit 1
}
venv_bin=${VENV_BIN:-$repo/.venv/bin}
port=${UI_PORT:-8081}              # `recycle serve` defaults to 8080
log_port=${UI_LOG_PORT:-8793}      # the LocalExecutor's task-log server

export AIRFLOW_HOME=$demo_dir/airflow
if [[ ! -f $AIRFLOW_HOME/airflow.db ]]; then
    echo "no Airflow metadata at $AIRFLOW_HOME/airflow.db: run \`make demo\` first" >&2
    exit 1
fi
# Airflow starts its children by name: they must be found on PATH.
export PATH=$venv_bin:$PATH
export RECYCLE_CONFIG=$demo_dir/recycle.toml
export AIRFLOW__CORE__DAGS_FOLDER=$repo/dags
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__EXECUTOR=LocalExecutor
export AIRFLOW__CORE__PARALLELISM=2                  # two cores; the default 32 forks 32 workers
export AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES=1
export AIRFLOW__API__HOST=127.0.0.1
export AIRFLOW__API__PORT=$port
export AIRFLOW__API__WORKERS=1
export AIRFLOW__API__BASE_URL=http://127.0.0.1:$port
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL=http://127.0.0.1:$port/execution/
export AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=$log_port
# The DAG is unpaused so a cleared task or a triggered run executes, but the scheduler
# creates no run from the @daily schedule: opening the UI never starts a night of its own.
export AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE=False
export AIRFLOW__CORE__AUTH_MANAGER=airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=admin:admin
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=$AIRFLOW_HOME/ui-passwords.json

passwords=$AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE
if [[ ! -s $passwords ]]; then
    (umask 077 && "$venv_bin/python" -c \
        'import json, secrets, sys; json.dump({"admin": secrets.token_urlsafe(12)}, open(sys.argv[1], "w"))' \
        "$passwords")
fi
password=$("$venv_bin/python" -c 'import json, sys; print(json.load(open(sys.argv[1]))["admin"])' "$passwords")

logs=$AIRFLOW_HOME/ui-logs
mkdir -p "$logs"
airflow pools set recycle_state 1 "DuckDB state: one writer" >"$logs/setup.log" 2>&1
if ! airflow dags unpause number_recycling_nightly >>"$logs/setup.log" 2>&1; then
    echo "could not unpause number_recycling_nightly (see $logs/setup.log); unpause it in the UI" >&2
fi

pids=()
stop() {
    trap - INT TERM EXIT
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait
}
trap 'stop; exit 0' INT TERM
trap stop EXIT
for component in api-server scheduler dag-processor; do
    airflow "$component" >"$logs/$component.log" 2>&1 &
    pids+=($!)
done

cat <<EOF
Airflow UI   http://127.0.0.1:$port   user admin   password $password
             (the password is kept in $passwords)
metadata     $AIRFLOW_HOME  (the demo's nights, their task logs under logs/)
components   api-server, scheduler (LocalExecutor, parallelism 2), dag-processor; logs in $logs/
The DAG is unpaused but runs nothing on its own: clear a task or trigger a run to replay a night.
Ctrl-C stops all three.
EOF

# One component exiting means the UI is broken: say which, and stop the others.
set +e
wait -n "${pids[@]}"
rc=$?
echo "an Airflow component exited (rc $rc); its log is in $logs/ — stopping the others" >&2
exit 1
