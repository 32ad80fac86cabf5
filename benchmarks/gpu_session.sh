#!/usr/bin/env bash
# One GPU-machine session's checks, from the repository root: the peers' builds (from .peer/), the GPU tests,
# compute-sanitizer over every declared op's kernels, and the demo.  Logs go to $OUT.
#   bash benchmarks/gpu_session.sh peers|tests|sanitize|demo ...
set -uo pipefail
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export PYTHONPATH=$PYTHONPATH:/tmp/peer
build() {   # build() NAME DIR [ENV...]: pip-install one peer extension into /tmp/peer, log in $OUT
  local name=$1 dir=$2; shift 2
  [ -d "$dir" ] || return 0
  (cd "$dir" && env "$@" MAX_JOBS=6 python3 -m pip install -q --no-build-isolation --no-deps --target /tmp/peer . \
     >"$OUT/peer-build-$name.log" 2>&1; echo "$name build rc=$?")
}
for step in "$@"; do
  case $step in
    peers)
      # the originals measured against (.peer/, unpacked by ../shared/device/get-peer.sh and peers/*.tar.gz);
      # layerdenoise's setup.py pins -arch compute_70, which CUDA 13 no longer has: build a copy for sm_90
      mkdir -p /tmp/peer
      if [ -d .peer/layerdenoise_peer/torch_utils ]; then
        rm -rf /tmp/layerdenoise && cp -r .peer/layerdenoise_peer/torch_utils /tmp/layerdenoise
        sed -i 's/compute_70/compute_90/' /tmp/layerdenoise/setup.py
      fi
      build sampler .peer/spatial_correlation_sampler-0.5.0 GPU_ARCH=90 &
      build alt_cuda_corr .peer/raft_peer/alt_cuda_corr TORCH_CUDA_ARCH_LIST=9.0 &
      build layerdenoise /tmp/layerdenoise TORCH_CUDA_ARCH_LIST=9.0 &
      wait ;;
    tests) python3 -m pytest -q -p no:cacheprovider -p no:warnings -m gpu tests/gpu 2>&1 | tee "$OUT/gpu-tests.log" | tail -25 ;;
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
