# One H200, one table per command: the training step's levers against the shipped
# reduce-overhead step, measured in the same process (bench/train_throughput.py --variants).
#   PART=1 bash bench/gpu_one_gpu_levers.sh   # seed, shipped, old blocking copies, flash SDPA, profile
#   PART=2 bash bench/gpu_one_gpu_levers.sh   # shipped, coordinate descent, max-autotune, validation
#   PART=3 bash bench/gpu_one_gpu_levers.sh   # shipped, patch embedding by cuDNN, validation
source bench/gpu_setup.sh || exit 1
if [ "${PART:-1}" = 1 ]; then
  timeout 560 python bench/train_throughput.py --out $OUT --variants \
    seed,reduce-overhead,ro-sync-index,ro-flash,reduce-overhead --steps 300 --profile > $OUT/levers1.log 2>&1
  echo "part 1: status $?"
  tail -12 $OUT/levers1.log
  grep -m1 "^wall" $OUT/levers1.log
elif [ "$PART" = 3 ]; then
  timeout 420 python bench/train_throughput.py --out $OUT --variants \
    seed,reduce-overhead,ro-conv-patch,reduce-overhead --steps 300 > $OUT/levers3.log 2>&1
  echo "part 3: status $?"
  tail -6 $OUT/levers3.log
  timeout 100 python bench/validation_speed.py --out $OUT --eager-only > $OUT/validation.log 2>&1
  echo "validation: status $?"
  grep "validation pass" $OUT/validation.log
else
  timeout 420 python bench/train_throughput.py --out $OUT --variants \
    reduce-overhead,ro-coord,max-autotune --steps 300 > $OUT/levers2.log 2>&1
  echo "part 2: status $?"
  tail -8 $OUT/levers2.log
  timeout 150 python bench/validation_speed.py --out $OUT > $OUT/validation.log 2>&1
  echo "validation: status $?"
  cat $OUT/validation.log | grep "validation pass"
fi
