#!/usr/bin/env bash
# A sharded run on Slurm: a job array of N tasks, one GPU each, then a merge job that starts
# only when every task succeeded (afterok).
#
#   tools/cluster/slurm-submit.sh N OUT_DIR RESULT profile --model W --data SPEC --preprocessing P ...
#
# Extra sbatch options (partition, account, time) go in SBATCH_* environment variables, which
# sbatch reads itself (e.g. SBATCH_PARTITION=gpu). NAC names the nac binary on the nodes.
set -euo pipefail
[ $# -ge 4 ] || { echo "usage: slurm-submit.sh N OUT_DIR RESULT profile|score NAC_ARGS..." >&2; exit 2; }
n=$1
out_dir=$2
result=$3
kind=$4
shift 4
here=$(cd "$(dirname "$0")" && pwd)
export NAC_SHARDS=$n
array=$(sbatch --parsable --job-name="nac-$kind" --array="0-$((n - 1))" --gres=gpu:1 --export=ALL \
    --wrap="$(printf '%q ' "$here/nac-shard.sh" "$out_dir" "$kind" "$@")")
array=${array%%;*}
sbatch --parsable --job-name="nac-$kind-gather" --dependency="afterok:$array" --export=ALL \
    --wrap="$(printf '%q ' "$here/nac-gather.sh" "$out_dir" "$kind" "$result")"
echo "submitted array job $array (${n} shards) and its gather job" >&2
