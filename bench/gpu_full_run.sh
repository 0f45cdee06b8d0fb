# The 25,000-step run on one H200, split over two commands with a resume between them (the
# second proves resume on a GPU), with side measurements on the second GPU of an x2 machine.
#   bash bench/gpu_full_run.sh 1   # GPU 0: train, USR1 after STOP_AFTER s; GPU 1: benches
#   bash bench/gpu_full_run.sh 2   # GPU 0: resume to 25,000; GPU 1: profile of one step
# /tmp/full must survive between the two (same warm machine).
source bench/gpu_setup.sh || exit 1
part=${1:?part 1 or 2}
full() {  # the train rule's exact command; its compile cache stays in /tmp/full/train
  env -u TORCHINDUCTOR_CACHE_DIR CUDA_VISIBLE_DEVICES=0 \
    python bench/full_run.py --work /tmp/full --nproc 1 "$@"
}
if [ "$part" = 1 ]; then
  full --stop-after "${STOP_AFTER:-420}" > $OUT/full_part1.log 2>&1 &
  export CUDA_VISIBLE_DEVICES=1
  python bench/validation_speed.py --out $OUT > $OUT/validation_speed.log 2>&1
  python bench/ddp_throughput.py --batches 32,64 --variants flat --steps 40 --out $OUT \
    > $OUT/one_gpu.log 2>&1
  wait
  log=$OUT/full_part1.log
else
  full > $OUT/full_part2.log 2>&1 &
  export CUDA_VISIBLE_DEVICES=1
  python bench/train_throughput.py --out $OUT --variants reduce-overhead --warmup 30 \
    --steps 100 --profile > $OUT/profile_1gpu.log 2>&1
  wait
  log=$OUT/full_part2.log
fi
cp /tmp/full/train/{metrics.csv,validation.csv,checkpoints.json} $OUT/ 2>/dev/null
grep -hE "validation pass|GPU\(s\)" $OUT/*.log
grep -E "resumed|torch.compile:|stopping|exited|training path" $log
grep -E "img/s" $log | tail -2
tail -3 $OUT/validation.csv
