#!/usr/bin/env bash
# The GPU check in one command, for a bare CUDA machine lent for a few minutes: install the carried
# packages, then run the benchmark, the profile and the GPU tests, each inside its own time budget,
# writing every result under $OUT (or ./gpu-out).
#
#   bash bench/gpu_wheels.sh --bitsandbytes --pack     # here, once: .whl/site.tar.xz (~44 MB)
#   bash bench/gpu_session.sh                          # there: everything (~10 min on one H200)
#   bash bench/gpu_session.sh --bench sft_full,grpo --bench-budget 200 --profile full --tests 120
#
# Options: --bench JOBS (bench/gpu.py --only; "none" skips), --bench-budget S, --profile full|lora|both|none,
# --tests S (seconds for `pytest -m gpu`; 0 skips), --tests-first (run the tests before the benchmark).
set -uo pipefail
cd "$(dirname "$0")/.."
OUTDIR=${OUT:-gpu-out}
mkdir -p "$OUTDIR"
BENCH=sft_full,sft_lora,grpo,dpo,qlora BUDGET=420 PROFILE=full TESTS=150 TESTS_FIRST=0
while (( $# )); do
  case "$1" in
    --bench) BENCH=$2; shift 2 ;;
    --bench-budget) BUDGET=$2; shift 2 ;;
    --profile) PROFILE=$2; shift 2 ;;
    --tests) TESTS=$2; shift 2 ;;
    --tests-first) TESTS_FIRST=1; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
export PYTHONUNBUFFERED=1
if [[ -f .whl/site.tar.xz ]]; then
  mkdir -p /tmp/site && tar -xJf .whl/site.tar.xz -C /tmp/site || exit 1
elif compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
fi
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUTDIR/gpu.txt"
python3 bench/gpu.py --check 2>&1 | tee -a "$OUTDIR/gpu.txt"

tests() {
  (( TESTS > 0 )) || return 0
  timeout "$TESTS" python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py tests/test_gpu_distributed.py -rfEs --durations=8 \
    2>&1 | tee "$OUTDIR/tests.txt"
}
(( TESTS_FIRST )) && tests
if [[ "$BENCH" != none ]]; then
  python3 bench/gpu.py --only "$BENCH" --budget "$BUDGET" --timeout 150 --json "$OUTDIR/bench.json" 2>&1 | tee "$OUTDIR/bench.txt"
fi
case "$PROFILE" in
  full) python3 bench/gpu_profile.py --out "$OUTDIR/profile_full.json" 2>&1 | tee "$OUTDIR/profile.txt" ;;
  lora) python3 bench/gpu_profile.py --lora --out "$OUTDIR/profile_lora.json" 2>&1 | tee "$OUTDIR/profile.txt" ;;
  both) { python3 bench/gpu_profile.py --out "$OUTDIR/profile_full.json"
          python3 bench/gpu_profile.py --lora --out "$OUTDIR/profile_lora.json"; } 2>&1 | tee "$OUTDIR/profile.txt" ;;
  none) ;;
  *) echo "unknown --profile $PROFILE" >&2 ;;
esac
(( TESTS_FIRST )) || tests
ls -la "$OUTDIR"
