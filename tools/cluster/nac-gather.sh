#!/usr/bin/env bash
# Combines the NAC_SHARDS parts nac-shard.sh wrote into OUT_DIR: profiles are summed by
# `nac merge` (which refuses a missing or repeated shard), score CSVs concatenated in shard
# order (only shard 0 carries the header), giving exactly the one-machine result.
#
#   NAC_SHARDS=8 tools/cluster/nac-gather.sh OUT_DIR profile|score RESULT
set -euo pipefail
[ $# -eq 3 ] || { echo "usage: nac-gather.sh OUT_DIR profile|score RESULT" >&2; exit 2; }
out_dir=$1
kind=$2
result=$3
count=${NAC_SHARDS:?nac-gather.sh: set NAC_SHARDS to the number of shards}
case $kind in
    profile) ext=safetensors ;;
    score) ext=csv ;;
    *) echo "nac-gather.sh: combines profile or score shards" >&2; exit 2 ;;
esac
parts=()
for ((i = 0; i < count; i++)); do
    part="$out_dir/part-$(printf %05d "$i").$ext"
    [ -s "$part" ] || { echo "nac-gather.sh: shard $i/$count is missing ($part)" >&2; exit 1; }
    parts+=("$part")
done
if [ "$kind" = profile ]; then
    if [ "$count" -eq 1 ]; then
        cp "${parts[0]}" "$result"
    else
        exec "${NAC:-nac}" merge --out "$result" "${parts[@]}"
    fi
else
    tmp="$result.tmp-$$"
    cat "${parts[@]}" > "$tmp" && mv "$tmp" "$result"
fi
