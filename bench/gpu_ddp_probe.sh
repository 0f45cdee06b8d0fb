# One 2-GPU command: NCCL all-reduce bandwidth (default protocol vs Simple, transport from
# NCCL's own log), then the data-parallel step variants with the faster protocol.
source bench/gpu_setup.sh || exit 1
run2() { torchrun --standalone --nproc_per_node 2 "$@"; }
NCCL_DEBUG=INFO run2 bench/nccl_bandwidth.py > $OUT/nccl_default.log 2>&1
grep -E "peer access|all-reduce" $OUT/nccl_default.log
grep -oE "via [A-Za-z/]+" $OUT/nccl_default.log | sort | uniq -c
NCCL_PROTO=Simple run2 bench/nccl_bandwidth.py > $OUT/nccl_simple.log 2>&1
grep -E "all-reduce" $OUT/nccl_simple.log | sed 's/^/Simple: /'
ms() { grep "600 MB" "$1" | awk '{print $5}'; }
if awk "BEGIN{exit !($(ms $OUT/nccl_simple.log) < 0.9 * $(ms $OUT/nccl_default.log))}"; then
  export NCCL_PROTO=Simple; echo "using NCCL_PROTO=Simple"
fi
run2 bench/ddp_throughput.py --batches 64,128 --variants "${VARIANTS:-flat,b1000}" --profile \
  --out $OUT > $OUT/ddp3.log 2>&1
grep -E "GPU\(s\)|^wall" $OUT/ddp3.log; tail -3 $OUT/ddp3.log
