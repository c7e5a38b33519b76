#!/usr/bin/env bash
# Every GPU-only check of qoqmed in one go, on one GPU machine, with a table of what passed and the numbers:
#   1. forward   a 7B-size random QoQ-Med in bf16, one forward on an image + ECG + text prompt (time, peak memory, finite logits)
#   2. steps     GRPO vs DRPO training steps on a 3B-size model in bf16: step time, rewards + advantage share (paper: < 2%)
#   3. qlora     the qlora-7b recipe (4-bit NF4 7B + LoRA) for 2 steps: peak GPU memory (target <= 20 GB)
#   4. fsdp      `accelerate launch` with configs/accelerate/fsdp.yaml (FSDP2, sharded state dict, bf16) on 1 GPU: 2 DRPO steps of the
#                demo config, a complete checkpoint with DRPO state, and final/ weights
#
#   bash bench/gpu_check.sh [OUT_DIR]            # default OUT_DIR: bench/gpu_check; writes OUT_DIR/gpu_check.md and one log per check
#   bash bench/gpu_check.sh --smoke [OUT_DIR]    # the same script on a CPU with tiny models (checks the script, not the GPU)
#   bash bench/gpu_check.sh --dry-run            # print the commands only
#
# Each check runs under its own time limit (seconds; the sum, 600, is the whole script's ceiling on one H200):
# FORWARD_S=90 STEPS_S=180 QLORA_S=240 FSDP_S=90. A check that fails or runs out of time is reported and the next one runs.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mode=gpu
case "${1:-}" in --smoke) mode=smoke; shift ;; --dry-run) mode=dry; shift ;; esac
out="${1:-$here/bench/gpu_check}"
py="${PYTHON:-python}"
if [ "$mode" = smoke ]; then
  sizes=(--device cpu --size tiny --qlora-size tiny --steps 2); fwd=tiny; acc=fsdp-cpu2; nproc=2; fsdp_extra=(training.use_cpu=true)
else
  sizes=(--device cuda --size 3b --qlora-size 7b --steps 5); fwd=7b; acc=fsdp; nproc=1; fsdp_extra=(training.use_cpu=false training.bf16=true)
fi
declare -A cmds=(
  [forward]="$py $here/bench/train_step.py ${sizes[*]} --forward-size $fwd --skip-steps --skip-qlora --out $out/forward.json"
  [steps]="$py $here/bench/train_step.py ${sizes[*]} --skip-qlora --out $out/steps.json"
  [qlora]="$py $here/bench/train_step.py ${sizes[*]} --skip-steps --out $out/qlora.json"
  [fsdp]="accelerate launch --config_file $here/configs/accelerate/$acc.yaml --num_processes $nproc --main_process_port 29561 -m qoqmed.train --config $here/configs/demo.yaml training.output_dir=$out/fsdp-run training.max_steps=2 training.save_steps=1 training.disable_tqdm=true ${fsdp_extra[*]}"
)
declare -A limits=([forward]="${FORWARD_S:-90}" [steps]="${STEPS_S:-180}" [qlora]="${QLORA_S:-240}" [fsdp]="${FSDP_S:-90}")
order=(forward steps qlora fsdp)
if [ "$mode" = dry ]; then
  for c in "${order[@]}"; do echo "$c (limit ${limits[$c]} s): ${cmds[$c]}"; done; exit 0
fi
mkdir -p "$out"; rm -rf "$out/fsdp-run"
report="$out/gpu_check.md"
machine=$( (nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | head -1) || true)
[ -n "$machine" ] || machine="no GPU ($(nproc) CPU cores)"
{
  echo "# qoqmed GPU check ($mode), $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "Machine: $machine; torch $($py -c 'import torch; print(torch.__version__)' 2>/dev/null)."
  echo
  echo "| check | status | seconds | result |"
  echo "|---|---|---:|---|"
} > "$report"
failed=0
for c in "${order[@]}"; do
  start=$(date +%s)
  timeout "${limits[$c]}" bash -c "${cmds[$c]}" > "$out/$c.log" 2>&1
  rc=$?
  secs=$(( $(date +%s) - start ))
  case "$c" in
    forward) result=$(grep -m1 '^Forward' "$out/$c.log") ;;
    steps) result=$(grep -m1 'DRPO / GRPO step time' "$out/$c.log"; grep '^| drpo |' "$out/$c.log" | head -1) ;;
    qlora) result=$(grep -m1 '^QLoRA' "$out/$c.log") ;;
    fsdp)
      result=""
      if [ $rc -eq 0 ]; then
        ckpt="$out/fsdp-run/checkpoint-2"
        for f in drpo_state.pt qoqmed_checkpoint_complete.json; do [ -e "$ckpt/$f" ] || { rc=3; result="$ckpt/$f missing; "; }; done
        ls "$out/fsdp-run/final/"*.safetensors > /dev/null 2>&1 || { rc=3; result="${result}no weights in final/; "; }
        grep -q "FSDP" "$out/$c.log" || result="${result}(the log does not name FSDP) "
        [ $rc -eq 0 ] && result="2 steps, complete checkpoint-2 with DRPO state, final/ weights"
      fi ;;
  esac
  if [ $rc -eq 0 ]; then status=ok; elif [ $rc -eq 124 ]; then status="TIMEOUT (${limits[$c]} s)"; failed=1; else status="FAILED (rc $rc)"; failed=1; fi
  [ -n "$result" ] || result="see $c.log: $(tail -1 "$out/$c.log" | cut -c1-160)"
  echo "| $c | $status | $secs | $(echo "$result" | tr '\n|' '; ' ) |" >> "$report"
  echo "$c: $status in $secs s"
done
echo
cat "$report"
exit $failed
