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

step "template: cfn-lint and sam validate --lint"
.tools/venv-sam/bin/cfn-lint template.yaml
SAM_CLI_TELEMETRY=0 .tools/venv-sam/bin/sam validate --lint --template-file template.yaml --region us-east-1

step "template security: checkov (every failed check fixed, or skipped in template.yaml with its reason)"
# --skip-download: checkov would otherwise fetch guidelines from Prisma Cloud. Where the kernel
# allows it, it runs without a network at all, so no test step can reach a non-loopback address.
offline=()
if unshare -rn true 2>/dev/null; then offline=(unshare -rn); fi
"${offline[@]}" .tools/venv-checkov/bin/checkov --file template.yaml --framework cloudformation \
  --skip-download --compact --quiet

step "moto server"
# shellcheck source=scripts/moto.sh
source scripts/moto.sh
mkdir -p target
trap stop_moto EXIT INT TERM
start_moto "$root" "$root/target/moto-test.log"

step "tests (unit, model, adapters against moto, template, local stack end to end)"
# The local-stack test runs `cargo lambda watch` from .tools/venv-local.
cargo test --workspace --all-features --locked 2>&1 | tee target/test-output.log

step "sam build (cargo-lambda, x86_64 here; the template defaults to arm64)"
# cargo-lambda and its zig come from .tools/venv-local; zig's caches stay in .tools/.
PATH="$root/.tools/venv-local/bin:$PATH" \
  ZIG_GLOBAL_CACHE_DIR="$root/.tools/zig-cache" CARGO_ZIGBUILD_CACHE_DIR="$root/.tools/zigbuild-cache" \
  SAM_CLI_TELEMETRY=0 \
  .tools/venv-sam/bin/sam build --beta-features --parameter-overrides Architecture=x86_64 \
  > target/sam-build.log 2>&1 || { tail -40 target/sam-build.log; exit 1; }
tail -3 target/sam-build.log
ls -l .aws-sam/build/*/bootstrap | awk '{ printf "%10d bytes  %s\n", $5, $9 }'

step "done in $((SECONDS - started)) s"
# One closing line for the whole run (cargo's last summary is the doc-tests', often empty).
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "tests: %d passed, %d failed\n", passed, failed }' target/test-output.log
