#!/usr/bin/env bash
# The one test command: installs the local tools (first run only), starts moto
# on a free loopback port, runs every check and test of the workspace against
# it, and stops moto on every exit path.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

started=$SECONDS
step() { printf '\n==> %s (%ss)\n' "$*" "$((SECONDS - started))"; }

step "setup: local tools in .tools/"
bash scripts/setup.sh

step "format and lint"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings

if [ -f template.yaml ]; then
  step "template: cfn-lint and sam validate --lint"
  .tools/venv-sam/bin/cfn-lint template.yaml
  SAM_CLI_TELEMETRY=0 .tools/venv-sam/bin/sam validate --lint --template-file template.yaml --region us-east-1
fi

step "moto server"
# shellcheck source=scripts/moto.sh
source scripts/moto.sh
mkdir -p target
trap stop_moto EXIT INT TERM
start_moto "$root" "$root/target/moto-test.log"

step "tests (unit, model, and adapters against moto)"
cargo test --workspace --all-features --locked 2>&1 | tee target/test-output.log

step "done in $((SECONDS - started)) s"
# One closing line for the whole run (cargo's last summary is the doc-tests', often empty).
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "tests: %d passed, %d failed\n", passed, failed }' target/test-output.log
