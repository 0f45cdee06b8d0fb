# The 25,000-step run through `chexdino train` (the train rule's command), split over two
# commands with a SLURM-style USR1 stop and a resume between them (which proves resume on
# GPUs), on one GPU or both of an x2 machine:
#   NPROC=2 STOP_AFTER=380 bash bench/gpu_full_run.sh 1   # trains, USR1 after STOP_AFTER s
#   NPROC=2 bash bench/gpu_full_run.sh 2                   # resumes to step 25,000
# /tmp/full must survive between the two: run them back to back on the same warm machine.
# With NPROC=1, part 1 also times the validation pass and the one-GPU step on GPU 1.
source bench/gpu_setup.sh || exit 1
part=${1:?part 1 or 2}
nproc=${NPROC:-1}
log=$OUT/full_part$part.log
full() {  # no TORCHINDUCTOR_CACHE_DIR: the compile cache stays in /tmp/full/train
  env -u TORCHINDUCTOR_CACHE_DIR CUDA_VISIBLE_DEVICES=$(seq -s, 0 $((nproc - 1))) \
    python bench/full_run.py --work /tmp/full --nproc $nproc "$@"
}
if [ "$part" = 1 ]; then
  full --stop-after "${STOP_AFTER:-420}" > $log 2>&1 &
else
  full > $log 2>&1 &
fi
if [ "$part" = 1 ] && [ "$nproc" = 1 ] && [ "$(nvidia-smi -L | wc -l)" -gt 1 ]; then
  export CUDA_VISIBLE_DEVICES=1
  python bench/validation_speed.py --out $OUT > $OUT/validation_speed.log 2>&1
  python bench/ddp_throughput.py --batches 32,64 --variants flat --steps 40 --out $OUT \
    > $OUT/one_gpu.log 2>&1
fi
wait
cp /tmp/full/train/{metrics.csv,validation.csv,checkpoints.json} $OUT/ 2>/dev/null
grep -hE "validation pass|GPU\(s\)" $OUT/*.log
grep -E "USR1|signal|blocked|resumed|torch.compile:|stopping|exited|training path" $log
grep -E "img/s" $log | tail -2
tail -n 2 $OUT/validation.csv
