# The real command the train rule runs (`chexdino train`, config.yaml's train section,
# random init, a learnable 30k-film synthetic store) for STEPS steps on one GPU: start-up,
# compilation, steady img/s, validation and checkpoint cost as a user sees them (~4 min).
#   STEPS=3000 bash bench/gpu_train_command.sh
source bench/gpu_setup.sh || exit 1
unset TORCHINDUCTOR_CACHE_DIR  # the compile cache stays in the run folder, as shipped
timeout ${LIMIT:-500} python bench/full_run.py --work /tmp/command --steps ${STEPS:-3000} \
  > $OUT/command.log 2>&1
echo "command: status $?"
cp /tmp/command/train/{metrics.csv,validation.csv} $OUT/ 2>/dev/null
grep -E "training path|torch.compile:|exited|training finished" $OUT/command.log
grep -E " img/s" $OUT/command.log | awk '{print $(NF-1)}' | tr '\n' ' '; echo
grep -E "validation at step" $OUT/command.log | sed 's/.*(\(.*\) s)/\1/' | tr '\n' ' '; echo
