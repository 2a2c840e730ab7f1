#!/usr/bin/env bash
# Launch pre-training with Megatron-LM. Needs only these variables; everything else is pinned
# here and in configs/vla-driver-tiny-dense.json.
#SBATCH --job-name=vla-pretrain
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=8
#SBATCH --gres=gpu:8
set -euo pipefail
: "${DATA_PATH:?set DATA_PATH to the blended dataset prefix}"
: "${CHECKPOINT_PATH:?set CHECKPOINT_PATH to the checkpoint directory}"
MASTER_ADDR=${MASTER_ADDR:-localhost}
MASTER_PORT=${MASTER_PORT:-6000}

torchrun --nproc_per_node 8 --nnodes 1 --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" \
    pretrain_gpt.py \
    --num-layers 4 --hidden-size 64 --ffn-hidden-size 128 \
    --num-attention-heads 4 --num-query-groups 2 --num-experts 0 \
    --max-position-embeddings 256 --tensor-model-parallel-size 2 --pipeline-model-parallel-size 2 \
    --expert-model-parallel-size 1 \
    --group-query-attention --normalization RMSNorm --swiglu \
    --position-embedding-type rope --untie-embeddings-and-output-weights --disable-bias-linear \
    --seq-length 256 --micro-batch-size 1 --global-batch-size 64 --lr-decay-style cosine --lr 0.0003 --min-lr 3e-05 --weight-decay 0.1 \
    --train-iters 1000 \
    --data-path "$DATA_PATH" --save "$CHECKPOINT_PATH" --load "$CHECKPOINT_PATH" --ckpt-format torch
