#!/usr/bin/env bash
# Run the head Snakemake process as a SLURM job, for clusters that stop long-running processes
# on login nodes. From the repository root, on a login node:
#
#   profiles/slurm/head-job.sh all                  # any snakemake arguments
#   profiles/slurm/head-job.sh --forcerun evaluate all
#
# It submits itself to the CPU partition of profiles/slurm/config.yaml (with the account set
# there), for HEAD_TIME (default 3 days); the job runs `snakemake --profile profiles/slurm ...`,
# which submits and watches the workflow's jobs. Its log: HEAD_LOG_DIR/head-<job id>.log
# (HEAD_LOG_DIR defaults to results/logs/slurm).
# Ten minutes before HEAD_TIME runs out SLURM sends SIGINT, which Snakemake takes as "stop":
# it cancels its running jobs (training checkpoints on the TERM that follows) and exits.
# Submit the same command again to continue (the profile sets rerun-incomplete).
set -euo pipefail

if [[ -z ${CHEXDINO_HEAD_JOB:-} ]]; then
    script=$(realpath "$0")
    cd "$(dirname "$script")/../.."
    python=${PYTHON:-.venv/bin/python}
    read -r partition account < <("$python" - <<'EOF'
import yaml

resources = yaml.safe_load(open("profiles/slurm/config.yaml"))["default-resources"]
print(resources["slurm_partition"], resources.get("slurm_account") or "-")
EOF
    )
    logs=${HEAD_LOG_DIR:-results/logs/slurm}
    mkdir -p "$logs"
    args=(--parsable --job-name=chexdino-head --partition="$partition"
          --time="${HEAD_TIME:-3-00:00:00}" --cpus-per-task=1 --mem=4G
          --signal=B:INT@600 --output="$logs/head-%j.log" --export=ALL,CHEXDINO_HEAD_JOB=1)
    if [[ $account != - ]]; then args+=(--account="$account"); fi
    job=$(sbatch "${args[@]}" "$script" "$@")
    echo "head job $job, log $logs/head-$job.log; stop it with: scancel --signal=INT --batch $job"
    exit 0
fi

# In the job: SLURM runs a copy of this script from the directory sbatch was called in.
cd "$SLURM_SUBMIT_DIR"
export PATH="$PWD/.venv/bin:$PATH"
# Job control on: otherwise a background command starts with SIGINT ignored.
set -m
snakemake --profile profiles/slurm "$@" &
head=$!
# The batch shell receives SLURM's INT; Snakemake must get SIGINT (not TERM) to stop cleanly.
trap 'kill -INT "$head" 2>/dev/null || true' INT TERM
status=0
wait "$head" || status=$?
while kill -0 "$head" 2>/dev/null; do  # a trapped signal interrupts `wait`: wait again
    wait "$head" || status=$?
done
exit "$status"
