#!/usr/bin/env bash
# Segment every video under a folder, each from the mask PNG beside it (videos/a.mp4 + videos/a.png).
#
#   bash examples/segment_folder.sh [VIDEOS] [OUT]
#
# One JSON line per video goes to results.jsonl; the exit status is 1 if any video failed (the others
# are still done). Finished videos are skipped when the command is run again, so an interrupted run
# resumes where it stopped.
set -euo pipefail

videos=${1:-videos}
out=${2:-out}

find "$videos" -name '*.mp4' | sort \
    | stma segment --mask-template '{stem}.png' --output "$out" --json > results.jsonl

# Which videos failed, and why:
#   grep '"status": "error"' results.jsonl
#
# Four processes on one machine, each with its own share of the list (--shard K/N) and of the CPUs
# (--threads: four processes with all the cores each would wait on each other):
#   for k in 0 1 2 3; do
#       find "$videos" -name '*.mp4' | sort \
#           | stma segment --mask-template '{stem}.png' --output "$out" --json --shard "$k/4" \
#               --threads $(( $(nproc) / 4 )) > "results-$k.jsonl" &
#   done; wait
#
# The same with xargs, eight videos per call (each call loads the model again; --name-template keeps
# one folder per video even when a call gets a single video):
#   find "$videos" -name '*.mp4' -print0 | xargs -0 -n 8 -P 4 \
#       stma segment --mask-template '{stem}.png' --output "$out" --name-template '{stem}' --json \
#           --threads $(( $(nproc) / 4 )) > results.jsonl
#
# A SLURM job array: task i takes shard i of the array's tasks (SLURM_ARRAY_TASK_ID/COUNT).
#   sbatch --array=0-7 --gres=gpu:1 --wrap \
#       "find $videos -name '*.mp4' | sort | stma segment --mask-template '{stem}.png' --output $out --json"
#
# Eight GPUs on one machine with torchrun: rank r takes shard r of WORLD_SIZE, on GPU LOCAL_RANK.
#   find "$videos" -name '*.mp4' | sort > list.txt
#   torchrun --nproc-per-node 8 --no-python \
#       sh -c "stma segment --mask-template '{stem}.png' --output $out --json < list.txt > results-\$RANK.jsonl"
