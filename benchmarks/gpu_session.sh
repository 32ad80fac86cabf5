#!/usr/bin/env bash
# One GPU-machine session's checks, from the repository root: the GPU tests (with the sampler peer built
# when .peer/ has it), compute-sanitizer over every declared op's kernels, and the demo.  Logs go to $OUT.
#   bash benchmarks/gpu_session.sh tests|sanitize|demo ...
set -uo pipefail
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
if [ -d .peer/spatial_correlation_sampler-0.5.0 ] && [ ! -d /tmp/peer ]; then
  (cd .peer/spatial_correlation_sampler-0.5.0 && GPU_ARCH=90 MAX_JOBS=16 python3 -m pip install -q \
     --no-build-isolation --no-deps --target /tmp/peer . >"$OUT/peer-build.log" 2>&1) && export PYTHONPATH=$PYTHONPATH:/tmp/peer
fi
[ -d /tmp/peer ] && export PYTHONPATH=$PYTHONPATH:/tmp/peer
for step in "$@"; do
  case $step in
    tests) python3 -m pytest -q -p no:cacheprovider -m gpu tests/gpu 2>&1 | tee "$OUT/gpu-tests.log" | tail -25 ;;
    sanitize)
      # every declared op, forward and backward, on the battery's small examples, and every kernel variant
      # forced (tests/gpu/test_gpu_variants.py); driver API return codes are not memory errors
      for tool in memcheck racecheck initcheck; do
        compute-sanitizer --tool $tool --report-api-errors no --print-limit 100 \
          python3 -m pytest -q -p no:cacheprovider -m gpu tests/gpu/test_gpu_battery.py tests/gpu/test_gpu_variants.py \
          -k "cuda_matches_reference and float32 or variants" >"$OUT/sanitizer-$tool.log" 2>&1
        echo "compute-sanitizer $tool: rc=$?"; grep -E "ERROR SUMMARY|passed|failed" "$OUT/sanitizer-$tool.log" | tail -3
      done ;;
    demo) python3 -m gpuops 2>&1 | tee "$OUT/demo.log" | tail -5 ;;
  esac
done
