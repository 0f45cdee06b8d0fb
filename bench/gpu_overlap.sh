# One machine, one table: the gradient-averaging strategies on 2 GPUs against one GPU at
# the per-GPU batches they run (~9 min on an x2 machine):
#   bash bench/gpu_overlap.sh
source bench/gpu_setup.sh || exit 1
timeout 400 torchrun --standalone --nproc_per_node 2 bench/ddp_throughput.py --batches 64,128 \
  --variants ${VARIANTS:-flat,o25,o100} --steps 30 --profile --out $OUT > $OUT/two_gpu.log 2>&1
echo "2 GPUs: status $?"
CUDA_VISIBLE_DEVICES=0 timeout 200 python bench/ddp_throughput.py --batches 32,64 --variants flat \
  --steps 30 --out $OUT > $OUT/one_gpu.log 2>&1
echo "1 GPU: status $?"
grep -h "GPU(s)\|wall " $OUT/two_gpu.log $OUT/one_gpu.log
