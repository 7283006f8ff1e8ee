#!/usr/bin/env bash
# The Flexora benchmark on the GPU machine, from the checkout (see docs/flexora.md).
#
#   bash benchmarks/flexora_gpu.sh SUITE DEADLINE_S [GGUF_PART ...] [-- extra flexora_bench.py args]
#
# SUITE: main | ablation | all. DEADLINE_S: seconds after the benchmark's start (prefetch and
# worker warm-up included) at which still-running jobs are killed; no job starts that is not
# estimated to end before it. GGUF_PART: the pieces of `split -b 50m` of
# SmolLM2-135M-Instruct.Q4_1.gguf in order (default: part-aa and part-ab, each from $HOME/m,
# else from .flexora_gpu/a or .flexora_gpu/b in the checkout); not needed when the joined
# file or its converted copy is already in $OPTKIT_CACHE (a second call on a warm machine).
# Environment: OUT (results; required), FLEXORA_WHEELS (folder with gguf-*.whl; default
# .flexora_gpu/b), FLEXORA_ARTIFACTS (folder holding bigbench-*/task.json and
# rotten-tomatoes/; default .flexora_gpu/b/artifacts), OPTKIT_CACHE (default $HOME/optkit-cache).
set -euo pipefail
set -o pipefail

SUITE=${1:?suite: main | ablation | all}
DEADLINE=${2:?deadline in seconds}
shift 2
PARTS=()
EXTRA=()
while [ $# -gt 0 ]; do
  if [ "$1" = "--" ]; then shift; EXTRA=("$@"); break; fi
  PARTS+=("$1"); shift
done
: "${OUT:?set OUT to the results folder}"
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export OPTKIT_CACHE=${OPTKIT_CACHE:-$HOME/optkit-cache}
export OPTKIT_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
WHEELS=${FLEXORA_WHEELS:-$ROOT/.flexora_gpu/b}
ARTS=${FLEXORA_ARTIFACTS:-$ROOT/.flexora_gpu/b/artifacts}
mkdir -p "$OUT" "$OPTKIT_CACHE/artifacts"
LOG="$OUT/flexora_gpu.log"
exec > >(tee -a "$LOG") 2>&1
echo "== $(date -u +%FT%TZ) flexora_gpu.sh $SUITE deadline ${DEADLINE}s; cache $OPTKIT_CACHE"
nvidia-smi --query-gpu=name,memory.total,memory.used,utilization.gpu --format=csv || true

# 1. data: the BIG-bench / Rotten Tomatoes artifacts, the GGUF joined from its parts
if [ -d "$ARTS" ]; then cp -r "$ARTS"/. "$OPTKIT_CACHE/artifacts/"; fi
GGUF_DIR="$OPTKIT_CACHE/artifacts/smollm2-135m-gguf"
GGUF="$GGUF_DIR/SmolLM2-135M-Instruct.Q4_1.gguf"
WANT=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
CONVERTED="$OPTKIT_CACHE/derived/smollm2-135m-safetensors/model.safetensors"
if [ -f "$CONVERTED" ]; then
  echo "converted model already cached: $CONVERTED"
elif [ -f "$GGUF" ] && [ "$(sha256sum "$GGUF" | cut -d' ' -f1)" = "$WANT" ]; then
  echo "GGUF already cached: $GGUF"
else
  if [ ${#PARTS[@]} -eq 0 ]; then  # each part from $HOME/m, else from the carried folders
    for name in part-aa part-ab; do
      for dir in "$HOME/m" "$ROOT/.flexora_gpu/a" "$ROOT/.flexora_gpu/b"; do
        if [ -f "$dir/$name" ]; then PARTS+=("$dir/$name"); break; fi
      done
    done
    [ ${#PARTS[@]} -eq 2 ] || { echo "GGUF parts not found (have: ${PARTS[*]:-none})"; exit 3; }
  fi
  for p in "${PARTS[@]}"; do
    [ -f "$p" ] || { echo "missing GGUF part $p (stage both parts first)"; exit 3; }
  done
  mkdir -p "$GGUF_DIR"
  cat "${PARTS[@]}" > "$GGUF.partial"
  GOT=$(sha256sum "$GGUF.partial" | cut -d' ' -f1)
  [ "$GOT" = "$WANT" ] || { echo "GGUF sha256 $GOT != $WANT"; exit 3; }
  mv "$GGUF.partial" "$GGUF"
  echo "GGUF joined from ${PARTS[*]}, sha256 ok"
fi

# 2. optkit's entry points (the plugins register through them) and the gguf package (pure
# Python) next to the installed torch / transformers / peft
python3 -m pip install --quiet --no-deps --no-build-isolation -e "$ROOT"
SITE=/tmp/flexora-site
if ! PYTHONPATH=$SITE python3 -c "import gguf" 2>/dev/null; then
  python3 -m pip install --quiet --no-deps --no-index --target "$SITE" "$WHEELS"/gguf-*.whl
fi
export PYTHONPATH="$SITE:$ROOT:$ROOT/plugins"
python3 -c "import torch, transformers, peft, gguf; print('torch', torch.__version__,
  'transformers', transformers.__version__, 'peft', peft.__version__, 'cuda', torch.cuda.is_available())"

# 3. the benchmark; GPU use sampled every 5 s
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 5 \
  > "$OUT/gpu_util.csv" 2>/dev/null &
SMI=$!
trap 'kill $SMI 2>/dev/null || true' EXIT
python3 benchmarks/flexora_bench.py --device cuda --suite "$SUITE" --deadline "$DEADLINE" \
  --out "$OUT/bench" --jobs-dir /tmp/flexora-jobs "${EXTRA[@]}" 2>&1 | tee "$OUT/bench.log"
kill $SMI 2>/dev/null || true

# 4. report (tables, goal checks, ablation, figures) into $OUT, traces of every job
python3 benchmarks/flexora_bench.py --table "$OUT/bench/flexora_results.jsonl" --report-dir "$OUT" \
  > /dev/null
(cd /tmp/flexora-jobs && find . -name results.jsonl -print0 | tar czf "$OUT/flexora_jobs.tar.gz" --null -T -) || true
# The device returns a limited number of files: the merged rows at the top level, the rest of
# bench/ (per-worker rows and logs, plan, skipped jobs) as one archive.
cp "$OUT/bench/flexora_results.jsonl" "$OUT/bench/skipped.txt" "$OUT/" 2>/dev/null || true
tar czf "$OUT/bench.tar.gz" -C "$OUT" bench && rm -rf "$OUT/bench"
ls -la "$OUT"
echo "== $(date -u +%FT%TZ) done"
