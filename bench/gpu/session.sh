#!/usr/bin/env bash
# The stages of a GPU session for the built-in prior (issues 3, 5 and 6), run by the device tool from
# the repository root on the lent machine. bench/gpu/README.md gives the calls, their order and budget.
#
#   bash bench/gpu/session.sh train SECONDS [ARGS]  train (or resume) for SECONDS, export the EMA weights
#                                               (ARGS: more `spgd train` options, which win)
#   bash bench/gpu/session.sh evaluate          samples for FID, the box-inpainting lr sweep, SPGD vs
#                                               classical baselines on the four tasks
#   bash bench/gpu/session.sh compare           issue 6: every sampler, published settings, validation faces
#   bash bench/gpu/session.sh speed             issue 5: bench/speed.py on the FFHQ-256 architecture, and
#                                               every sampler's time and memory (bench/sampler_speed.py)
#
# Environment: DEADLINE (seconds after the start at which evaluation steps stop; default 560, set it
# below the device time left), CONTINUE=1 (train: refuse to start afresh, for a second training call),
# DEVICE (default cuda), QUICK=1 with DEVICE=cpu and a tiny network checks every stage on a CPU.
#
# What a person needs comes back under $OUT (at most 8 files). The run folder runs/faces64 stays on
# the machine only while it is warm; the exported weights also travel in .data/gpu_weights/.
set -Eeuo pipefail
export PYTHONPATH=src PYTHONUNBUFFERED=1
STAGE=${1:-}
OUT=${OUT:-outputs/gpu}
RUN=${RUN:-runs/faces64}
DEVICE=${DEVICE:-cuda}
DEADLINE=${DEADLINE:-560}
DEADLINE=${DEADLINE%.*}  # whole seconds
mkdir -p "$OUT" "$RUN"
OUT=$(cd "$OUT" && pwd)
# the weights: this machine's latest export, else the copy carried in .data/gpu_weights/
WEIGHTS=$RUN/faces64.safetensors
[ -f "$WEIGHTS" ] || [ "$STAGE" = train ] || WEIGHTS=.data/gpu_weights/faces64.safetensors

unpack() {  # unpack .data/gpu_*/NAME.zip once into .data/NAME/
  [ -d ".data/$2" ] || python3 -m zipfile -e ".data/$1/$2.zip" ".data/$2/"
}

pack_results() {  # the tables so far, in one file
  python3 - "$RUN" "$OUT/results.zip" <<'EOF'
import sys, zipfile
from pathlib import Path
run = Path(sys.argv[1])
files = [*run.glob("quality*/quality.*"), *run.glob("sweep/sweep.*"), *run.glob("compare_*.md")]
with zipfile.ZipFile(sys.argv[2], "w", zipfile.ZIP_DEFLATED) as archive:
    for f in sorted(files):
        archive.write(f, f.relative_to(run))
EOF
}

# progress bars and tracebacks go to $RUN/stderr.log; the end of this call's part comes back
LOG_START=$(stat -c %s "$RUN/stderr.log" 2>/dev/null || echo 0)
on_exit() {
  [ ! -f "$RUN/stderr.log" ] || tail -c +$((LOG_START + 1)) "$RUN/stderr.log" | tail -c 6000 > "$OUT/stderr_tail.txt"
  case "$STAGE" in
    evaluate|compare) pack_results ;;
    speed) cp "$RUN"/speed.md "$RUN"/sampler_speed.md "$OUT/" 2>/dev/null || true ;;
  esac
}
trap on_exit EXIT

# A device command is killed at its time limit, and what has not reached $OUT is lost. Evaluation
# steps stop (SIGINT) at DEADLINE seconds after the start instead; finished images stay in $RUN and
# running the stage again resumes.
bounded() {
  local left=$((DEADLINE - SECONDS)) rc=0
  if [ $left -le 10 ]; then echo "out of time before: $1 $2 ...; run the stage again (it resumes)"; return 1; fi
  timeout --signal=INT --kill-after=20 $left "$@" || rc=$?
  case $rc in
    0) ;;
    124|137) echo "stopped at DEADLINE: $1 $2 ...; run the stage again (it resumes)"; return 1 ;;
    *) echo "failed (exit $rc): $1 $2 ...; see stderr_tail.txt (running again will not help)"; return 1 ;;
  esac
}

need_weights() {
  [ -f "$WEIGHTS" ] || { echo "no weights: carry .data/gpu_weights (faces64.safetensors from the train call)"; exit 4; }
  sha256sum "$WEIGHTS" | cut -c1-16 | sed "s|^|weights $WEIGHTS sha256 |"
}

environment() {
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  python3 -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda)"
}

case "$STAGE" in
  train)
    seconds=${2:?train needs SECONDS}
    shift 2
    if [ "${CONTINUE:-0}" = 1 ] && ! ls "$RUN"/checkpoints/ckpt_*.pt >/dev/null 2>&1; then
      echo "no checkpoint in $RUN: the machine was given back since the last call; not starting afresh" >&2
      exit 3
    fi
    environment | tee -a "$OUT/train.log"
    unpack gpu_train utkface64_train
    train() {  # progress-bar redraws go to the log; the reply's tail gets every 300th and all other lines
      python3 -m spgd train --data .data/utkface64_train --out "$RUN" --size 64 --batch-size 256 --lr 2e-4 \
        --warmup 500 --steps 200000 --grid-every 2000 --ckpt-every 2000 --workers 0 --resume --device "$DEVICE" \
        "$@" 2>&1 | tr '\r' '\n' | tee -a "$OUT/train.log" | awk '!/(it\/s|s\/it)[^]]*\] *$/ || NR % 300 == 0'
    }
    # torch.compile first; should it fail on this machine's torch, train uncompiled for what is left
    began=$SECONDS
    if ! train --time-limit "$seconds" --compile "$@"; then
      left=$((seconds - (SECONDS - began)))
      [ $left -ge 30 ] || { echo "compiled training failed with $left s left: not retrying"; exit 1; }
      train --time-limit $left "$@"
    fi
    python3 -m spgd export "$RUN" "$WEIGHTS" | tee -a "$OUT/train.log"
    # results of earlier weights must not be resumed into those of these
    rm -rf "$RUN"/samples "$RUN"/samples.zip "$RUN"/sweep "$RUN"/quality "$RUN"/quality_box "$RUN"/compare_*
    cp "$WEIGHTS" "$OUT/"
    [ ! -f "$RUN/loss.csv" ] || cp "$RUN/loss.csv" "$OUT/"
    last_grid=$(ls "$RUN"/samples/step_*.png 2>/dev/null | tail -1) || true
    [ -z "$last_grid" ] || cp "$last_grid" "$OUT/"
    ;;
  evaluate)
    export SPGD_CACHE=.data/gpu_eval/cache
    for name in utkface64_val utkface64_tune ffhq64; do unpack gpu_eval $name; done
    environment | tee "$OUT/evaluate.log"
    need_weights | tee -a "$OUT/evaluate.log"
    if [ -n "${QUICK:-}" ]; then  # the pipeline in seconds, for checking it on the CPU
      n=8; limit=(--limit 2); tune=(--limit 2); sets=(steps=2 inner_steps=1); lrs=(1 2.5)
    else
      n=1000; limit=(); tune=(--limit 50); sets=(); lrs=(0.5 1 2.5 4)
    fi
    # unconditional samples for FID (computed on the CPU afterwards: spgd fid samples/images VAL)
    if [ ! -f "$RUN/samples.zip" ]; then
      bounded python3 -m spgd sample --model "$WEIGHTS" --n $n --batch-size 500 --steps 50 --device "$DEVICE" \
        --out "$RUN/samples" 2>>"$RUN/stderr.log" | tee -a "$OUT/evaluate.log"
      (cd "$RUN" && python3 -m zipfile -c samples.zip samples/images samples/grid.png)
    fi
    cp "$RUN/samples/grid.png" "$OUT/samples_grid.png"
    cp "$RUN/samples.zip" "$OUT/"
    # the box-inpainting lr, chosen on training faces (the validation split stays for reporting)
    bounded python3 bench/quality.py --model "$WEIGHTS" --data .data/utkface64_tune --tasks inpainting_box \
      --sweep-lr "${lrs[@]}" --precision bf16 --device "$DEVICE" "${tune[@]}" \
      --set "${sets[@]}" --out "$RUN/sweep" 2>>"$RUN/stderr.log" | tail -4 | tee -a "$OUT/evaluate.log"
    box_lr=$(python3 -c "import json; print(json.load(open('$RUN/sweep/sweep.json'))['results']['utkface64_tune']['inpainting_box']['best_lr'])")
    box_set=()
    if [ "$box_lr" != None ]; then box_set=(lr="$box_lr"); else echo "every swept lr failed: the preset's lr stays" | tee -a "$OUT/evaluate.log"; fi
    # SPGD against the classical baselines on the validation split and ffhq-demo (Richardson-Lucy, at
    # 8 s per image, is left to the CPU afterwards: Wiener is the deconvolution baseline here)
    quality() {
      bounded python3 bench/quality.py --model "$WEIGHTS" --data .data/utkface64_val .data/ffhq64 --precision bf16 \
        --baselines bicubic biharmonic wiener --device "$DEVICE" "${limit[@]}" "$@" \
        2>>"$RUN/stderr.log" | tail -12 | tee -a "$OUT/evaluate.log"
      pack_results  # also now: should the tool kill the call, the tables so far are under $OUT
    }
    quality --tasks super_resolution inpainting_random gaussian_blur --out "$RUN/quality" --set "${sets[@]}"
    quality --tasks inpainting_box --out "$RUN/quality_box" --set "${sets[@]}" "${box_set[@]}"
    ;;
  compare)
    export SPGD_CACHE=.data/gpu_eval/cache
    unpack gpu_eval utkface64_val
    environment | tee "$OUT/compare.log"
    need_weights | tee -a "$OUT/compare.log"
    if [ -n "${QUICK:-}" ]; then
      few=(--limit 2 --set spgd.steps=2 spgd.inner_steps=1 dps.steps=4 daps.steps=2 daps.ode_steps=1
           daps.langevin_steps=2 reddiff.steps=4 deqir.steps=4)
    else
      few=(--limit 100)
    fi
    # every sampler with its published settings on the same validation faces and seeds (issue 6)
    for task in super_resolution inpainting_random; do
      [ ! -f "$RUN/compare_$task.md" ] || continue  # done by an earlier call
      bounded python3 bench/compare_samplers.py --model "$WEIGHTS" --data .data/utkface64_val --size 64 \
        --precision bf16 --task "$task" --device "$DEVICE" --out "$RUN/compare_$task.md" "${few[@]}" 2>>"$RUN/stderr.log" | tail -12
      pack_results
    done | tee -a "$OUT/compare.log"
    ;;
  speed)
    environment | tee "$OUT/speed.log"
    if [ -n "${QUICK:-}" ]; then
      net=(--model "$WEIGHTS"); batches=(1); spgd_steps=(--measure-steps 1 --skip-reference)
    else
      net=(--arch ffhq256); batches=(1 8 32); spgd_steps=()
    fi
    # SPGD: the published way of computing against the fast path, same run (issue 5); compiled, or
    # uncompiled should compilation fail; each table is kept in $RUN, so a later call skips it
    if [ ! -f "$RUN/speed.md" ]; then
      speed() {
        bounded python3 bench/speed.py "${net[@]}" --device "$DEVICE" --batch-sizes "${batches[@]}" --precision bf16 \
          "${spgd_steps[@]}" --out "$RUN/speed.md" "$@" 2>>"$RUN/stderr.log" | tee -a "$OUT/speed.log"
      }
      speed --compile || speed || true
    fi
    # every sampler's wall clock and peak memory at its published settings; DeqIR parallel vs sequential (issue 6)
    [ -f "$RUN/sampler_speed.md" ] || bounded python3 bench/sampler_speed.py "${net[@]}" --device "$DEVICE" \
      --batch-sizes "${batches[@]:0:2}" --out "$RUN/sampler_speed.md" 2>>"$RUN/stderr.log" | tee -a "$OUT/speed.log"
    ;;
  *)
    echo "usage: bash bench/gpu/session.sh train SECONDS [ARGS] | evaluate | compare | speed" >&2
    exit 2
    ;;
esac
