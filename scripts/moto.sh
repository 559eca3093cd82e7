#!/usr/bin/env bash
# Starts a moto server (ECS, EC2, DynamoDB) on a free loopback port, with ECS
# task transitions frozen, and prints `export` lines for the SDK to reach it.
# Sourced by scripts/test.sh and scripts/demo.sh: defines start_moto / stop_moto.

moto_port() {
  "$PYTHON_BIN" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

start_moto() {
  local root="$1" log="$2"
  PYTHON_BIN="$root/.tools/venv-local/bin/python"
  local server="$root/.tools/venv-local/bin/moto_server"
  if [ ! -x "$server" ]; then
    echo "moto: $server is missing: run scripts/setup.sh" >&2
    return 1
  fi
  MOTO_PORT="$(moto_port)"
  "$server" -H 127.0.0.1 -p "$MOTO_PORT" >"$log" 2>&1 &
  MOTO_PID=$!
  local url="http://127.0.0.1:$MOTO_PORT"
  for _ in $(seq 1 100); do
    if curl -fsS "$url/moto-api/" >/dev/null 2>&1; then
      # Tasks stay in the status they were started in until a test moves them.
      curl -fsS -X POST "$url/moto-api/state-manager/set-transition" \
        -H 'Content-Type: application/json' \
        -d '{"model_name":"ecs::task","transition":{"progression":"manual","times":1000000}}' >/dev/null
      export AWS_ENDPOINT_URL="$url"
      export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
      export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_SESSION_TOKEN=testing
      export AWS_EC2_METADATA_DISABLED=true
      unset AWS_PROFILE
      echo "moto: listening on $url (pid $MOTO_PID, log $log)"
      return 0
    fi
    if ! kill -0 "$MOTO_PID" 2>/dev/null; then
      echo "moto: the server exited at start; its log:" >&2
      cat "$log" >&2
      return 1
    fi
    sleep 0.2
  done
  echo "moto: no answer on $url after 20 s; its log:" >&2
  cat "$log" >&2
  stop_moto
  return 1
}

stop_moto() {
  if [ -n "${MOTO_PID:-}" ] && kill -0 "$MOTO_PID" 2>/dev/null; then
    kill "$MOTO_PID" 2>/dev/null
    wait "$MOTO_PID" 2>/dev/null
  fi
  MOTO_PID=
}
