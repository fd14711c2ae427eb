#!/usr/bin/env bash
# second device run of 2026-12-04: verify the eval-mode BatchNorm backward fix, kernel profile, rest
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2 TORCHINDUCTOR_COMPILE_THREADS=16
r=/tmp/r; mkdir -p $r
t0=$(date +%s)
timeout -k 10 100 python3 -m pytest -p no:cacheprovider -v -rfE --tb=short -n 12 --timeout 90 tests \
  -m "not large_memory" -k "(cuda or triton) and (batch_norm_modes or 1x13x1x1 or opcheck_composite or cbam_compile_fullgraph or fuzz or gradcheck or nan_propagates)" > $r/verify.log 2>&1
echo "verify rc=$? $(( $(date +%s) - t0 ))s: $(tail -1 $r/verify.log)"
timeout -k 10 70 python3 -m bench.kernels --out $r/kernels.txt > $r/kernels.log 2>&1
echo "kernels rc=$? $(( $(date +%s) - t0 ))s"
timeout -k 10 40 python3 -m pytest -p no:cacheprovider -v -rfE --tb=short tests/test_large.py -m large_memory \
  -k "backward and (cbam or triplet)" > $r/large.log 2>&1
echo "large rc=$? $(( $(date +%s) - t0 ))s: $(tail -1 $r/large.log)"
timeout -k 10 75 python3 -m bench --quick --modules se eca cbam coord triplet --shapes resnet50-stage3 resnet50-stage4 inference-b1 --out $r/shapes > $r/shapes.log 2>&1
echo "shapes rc=$? $(( $(date +%s) - t0 ))s"
tar czf $OUT/run2.tgz -C $r .
cp $r/kernels.txt $OUT/ 2>/dev/null
grep -E "FAILED|passed|failed" $r/verify.log | tail -15
