# One machine, one table: 2 GPUs (global batch 64 and 128) against one GPU at the per-GPU
# batches they run (32 and 64), ~8 min on an x2 machine:
#   bash bench/gpu_scaling.sh                      # VARIANTS=flat,b1000 to add DDP
source bench/gpu_setup.sh || exit 1
timeout 400 torchrun --standalone --nproc_per_node 2 bench/ddp_throughput.py --batches 64,128 \
  --variants ${VARIANTS:-flat} --steps 30 --profile --out $OUT > $OUT/two_gpu.log 2>&1
echo "2 GPUs: status $?"
CUDA_VISIBLE_DEVICES=0 timeout 200 python bench/ddp_throughput.py --batches 32,64 --variants flat \
  --steps 30 --out $OUT > $OUT/one_gpu.log 2>&1
echo "1 GPU: status $?"
grep -h "GPU(s)\|wall " $OUT/two_gpu.log $OUT/one_gpu.log
