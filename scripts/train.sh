#!/usr/bin/env bash
# Launch `qoqmed train` under accelerate with one of the shipped accelerate configs.
#
#   scripts/train.sh zero3|fsdp|cpu2|fsdp-cpu2|zero3-cpu2 CONFIG.yaml [key=value ...]
#
# cpu2, fsdp-cpu2 and zero3-cpu2 run two CPU processes (gloo; the run config must set training.use_cpu: true, as configs/demo.yaml
# does): DDP, FSDP2 with fsdp.yaml's settings, and DeepSpeed ZeRO-3 with zero3.yaml's (DeepSpeed must be installed), to exercise
# the multi-process engines on a machine without GPUs.
#
# Environment: GPUS (processes per node, default: all visible GPUs), NNODES (default 1), NODE_RANK (default 0),
# MASTER_ADDR (default 127.0.0.1), MASTER_PORT (default 29500). Multi-node: run the same command on every node
# with its NODE_RANK. Resume after a kill: append `resume=true` or `--resume` (continues from the last complete checkpoint), or
# `resume=CHECKPOINT_DIR` (read by the run config's loader as its top-level `resume`).
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 zero3|fsdp|cpu2|fsdp-cpu2|zero3-cpu2 CONFIG.yaml [key=value ...]" >&2; exit 2
fi
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
engine="$1"; config="$2"; shift 2
acc="$here/configs/accelerate/$engine.yaml"
[ -f "$acc" ] || { echo "no accelerate config $acc (choose zero3, fsdp, cpu2, fsdp-cpu2 or zero3-cpu2)" >&2; exit 2; }
[ -f "$config" ] || { echo "no run config $config" >&2; exit 2; }
nnodes="${NNODES:-1}"
if [ "${engine%cpu2}" != "$engine" ]; then gpus="${GPUS:-2}"   # cpu2, fsdp-cpu2, zero3-cpu2: two CPU processes
else gpus="${GPUS:-$(python -c 'import torch; print(max(torch.cuda.device_count(), 1))')}"; fi
exec accelerate launch --config_file "$acc" \
  --num_machines "$nnodes" --machine_rank "${NODE_RANK:-0}" --num_processes "$((gpus * nnodes))" \
  --main_process_ip "${MASTER_ADDR:-127.0.0.1}" --main_process_port "${MASTER_PORT:-29500}" \
  -m qoqmed.train --config "$config" "$@"
