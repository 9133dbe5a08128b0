#!/usr/bin/env bash
# GPU figures for docs/scaling.md, as one prepared script (run it on a CUDA machine from the repo root):
#   bash benchmarks/gpu_evaluation.sh DATA [OUT]
# 1. PGD-20 and `strong` images/s on ResNet50 at 224 px in bf16 (random weights, 3 classes, batch 128);
# 2. wall time of `fortify reproduce --profile quick` on DATA;
# 3. wall time of one evaluation at AutoAttack-standard budgets (the paper profile's evaluation budgets) of
#    the quick run's adversarial checkpoint (`fortify evaluate`'s defaults).
# Prints the GPU's name beside every figure. Needs torch with CUDA; DATA is an IQ-OTH/NCCD folder.
set -euo pipefail
DATA=${1:?usage: bash benchmarks/gpu_evaluation.sh DATA [OUT]}
OUT=${2:-runs/gpu}
export PYTHONPATH=${PYTHONPATH:-}:$PWD/src
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python - <<'PY'
import time, torch
from fortify.attacks import pgd, strong
from fortify.models import build_model
from fortify.runtime import Runtime
rt = Runtime.resolve("cuda", "bf16")
model = rt.prepare_model(build_model("resnet50", 3, in_channels=1)).eval()
x = torch.rand(128, 1, 224, 224, device=rt.device)
y = torch.randint(0, 3, (128,), device=rt.device)
for name, fn in (("PGD-20", lambda: pgd(model, x, y, eps=2 / 255, steps=20)),
                 ("strong", lambda: strong(model, x, y, eps=2 / 255))):
    with rt.autocast():
        fn(); torch.cuda.synchronize(); t0 = time.perf_counter(); fn(); torch.cuda.synchronize()
    print(f"{name}: {len(x) / (time.perf_counter() - t0):.1f} images/s on {torch.cuda.get_device_name()} (bf16, 224 px)")
PY
t0=$(date +%s); python -m fortify reproduce --data "$DATA" --out "$OUT/quick" --profile quick --force >/dev/null
echo "reproduce --profile quick: $(( $(date +%s) - t0 )) s"
t0=$(date +%s)
python -m fortify evaluate --checkpoint "$OUT/quick/adversarial/best.safetensors" --data "$DATA" \
  --split "$OUT/quick/split.json" --out "$OUT/paper-eval" --force >/dev/null
echo "one evaluation at paper budgets (the quick model): $(( $(date +%s) - t0 )) s"
