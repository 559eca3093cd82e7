#!/usr/bin/env bash
# Installs the project's local tools into git-ignored folders under .tools/.
# A second run reuses what is there: each virtualenv is rebuilt only when its
# pinned requirement list changes.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$root/.tools"
mkdir -p "$tools"

python="${PYTHON:-python3}"

# venv NAME PACKAGE==VERSION...
ensure_venv() {
  local name="$1"; shift
  local dir="$tools/$name"
  local wanted
  wanted="$(printf '%s\n' "$@")"
  if [ -x "$dir/bin/python" ] && [ -f "$dir/.installed" ] && [ "$(cat "$dir/.installed")" = "$wanted" ]; then
    echo "setup: $name up to date ($dir)"
    return
  fi
  echo "setup: installing $name into $dir: $*"
  rm -rf "$dir"
  "$python" -m venv "$dir"
  "$dir/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  "$dir/bin/python" -m pip install --quiet --disable-pip-version-check "$@"
  printf '%s' "$wanted" > "$dir/.installed"
}

# moto serves ECS, EC2 (instance identity for RegisterContainerInstance) and DynamoDB;
# cargo-lambda brings ziglang for cross builds.
ensure_venv venv-local "moto[server,ec2,ecs,dynamodb]==5.2.5" "cargo-lambda==1.9.2"
# SAM and cfn-lint pin their own botocore: a virtualenv of their own.
ensure_venv venv-sam "aws-sam-cli==1.170.0" "cfn-lint==1.58.0"
# checkov (template security checks) pins a long list of its own: a virtualenv of its own too.
ensure_venv venv-checkov "checkov==3.3.30"

"$tools/venv-local/bin/moto_server" --help >/dev/null
"$tools/venv-sam/bin/cfn-lint" --version
"$tools/venv-sam/bin/sam" --version
"$tools/venv-checkov/bin/checkov" --version
