#!/usr/bin/env bash
# Install the Debian packages the Slurm tests need (Slurm 22.05 daemons + client,
# munge for authentication, shellcheck for the script lint). Idempotent: does
# nothing when every command is already on PATH. Needs root and apt-get.
set -euo pipefail

needed=(slurmctld slurmd sbatch munged shellcheck)
missing=()
for cmd in "${needed[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
done
if [ "${#missing[@]}" -eq 0 ]; then
    echo "slurm_setup: all present (${needed[*]})"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "slurm_setup: apt-get not available; missing: ${missing[*]}" >&2
    exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "slurm_setup: must run as root to install: ${missing[*]}" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends slurmctld slurmd slurm-client munge shellcheck
echo "slurm_setup: installed (was missing: ${missing[*]})"
