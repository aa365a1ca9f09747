.PHONY: install lint test bench demo

install:
	python3.11 -m venv .venv && .venv/bin/pip install "torch==2.13.0" -e ".[test]"

lint:
	.venv/bin/ruff check workers orchestration tests bench
	.venv/bin/mypy

test:
	.venv/bin/python -m pytest

bench:
	.venv/bin/python bench/run.py

demo:
	.venv/bin/evofleet demo
