#!/usr/bin/env bash
# One shard of a sharded `nac profile` / `nac score` / `nac predict` run, for any scheduler.
# The shard index comes from a Slurm job array (SLURM_ARRAY_TASK_ID), a Kubernetes Indexed Job
# (JOB_COMPLETION_INDEX) or NAC_SHARD_INDEX; the shard count from NAC_SHARDS. The output goes to
# OUT_DIR/part-IIIII.{safetensors,csv,npy}; nac-gather.sh combines the parts.
#
#   NAC_SHARDS=8 SLURM_ARRAY_TASK_ID=3 tools/cluster/nac-shard.sh OUT_DIR profile --model W --data SPEC ...
set -euo pipefail
usage="usage: nac-shard.sh OUT_DIR profile|score|predict NAC_ARGS..."
[ $# -ge 2 ] || { echo "$usage" >&2; exit 2; }
out_dir=$1
command=$2
shift 2
index=${SLURM_ARRAY_TASK_ID:-${JOB_COMPLETION_INDEX:-${NAC_SHARD_INDEX:-}}}
[ -n "$index" ] || { echo "nac-shard.sh: no shard index: set SLURM_ARRAY_TASK_ID, JOB_COMPLETION_INDEX or NAC_SHARD_INDEX" >&2; exit 2; }
count=${NAC_SHARDS:?nac-shard.sh: set NAC_SHARDS to the number of shards}
case $command in
    profile) ext=safetensors ;;
    score) ext=csv ;;
    predict) ext=npy ;;
    *) echo "$usage" >&2; exit 2 ;;
esac
mkdir -p "$out_dir"
exec "${NAC:-nac}" "$command" "$@" --shard "$index/$count" --out "$out_dir/part-$(printf %05d "$index").$ext"
