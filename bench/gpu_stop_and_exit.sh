# A short check of the two things a SLURM run needs from the trainers on GPUs (~5 min on an
# x2 machine): SLURM's USR1 makes every trainer checkpoint and exit 75, and the resumed run
# exits promptly after its last step (no hang in the NCCL shutdown).
#   NPROC=2 bash bench/gpu_stop_and_exit.sh
source bench/gpu_setup.sh || exit 1
unset TORCHINDUCTOR_CACHE_DIR
work=/tmp/stop-check
rm -rf $work/train
# timeout signals its whole process group: the trainers too.
steps=${STEPS:-6000}
run() { timeout ${LIMIT:-300} python bench/full_run.py --work $work --nproc ${NPROC:-2} \
          --steps $steps --train-images ${IMAGES:-4000} --val-images 1000 "$@"; }
run --stop-after ${STOP_AFTER:-130} > $OUT/stop.log 2>&1
echo "stop command: status $? (75: stopped for a resubmission)"
grep -E "USR1 to|received signal|stopping at|exited" $OUT/stop.log
run > $OUT/resume.log 2>&1
status=$?
echo "resume command: status $status (124: did not exit within ${LIMIT:-300} s)"
grep -E "resumed from|torch.compile:|exited" $OUT/resume.log
last=$(grep -E "step $steps loss" $OUT/resume.log | head -1 | cut -c1-23)
echo "last step logged at $last; command ended at $(date -u '+%F %T')"
