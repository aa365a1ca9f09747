.PHONY: install lint test bench demo gpu-check

install:
	python3.11 -m venv .venv && .venv/bin/pip install "torch==2.13.0" -e ".[all,test]"

lint:
	.venv/bin/ruff check workers orchestration tests bench
	.venv/bin/mypy

test:
	.venv/bin/python -m pytest

bench:
	.venv/bin/python bench/run.py

demo:
	.venv/bin/evofleet demo

# On a CUDA node: what deploy/README.md's "GPU tests" section asks to paste. A node's own
# install: make gpu-check VENV=/opt/evofleet/.venv (its python needs evofleet[test] installed).
VENV ?= .venv
gpu-check:
	nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv
	$(VENV)/bin/python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'gpus', torch.cuda.device_count())"
	$(VENV)/bin/python -m pytest tests/gpu -m gpu -v -s
	$(VENV)/bin/python bench/gpu.py
