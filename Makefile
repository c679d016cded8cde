# The two commands: `make demo` (the whole path on a laptop CPU) and `make test` (the suite);
# `make test-fast` is the edit-test loop: everything not marked slow (multi-process or end to end).
# Each creates .venv and installs everything first. torch is installed on its own, pinned, so pip
# never swaps in a CUDA build; point TORCH_PIP_ARGS at another index if your machine needs one,
# e.g. make demo TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_PIP_ARGS ?=
PYTEST_ARGS ?=
DEMO := runs/demo
NPROC ?= 2
TRAIN := OMP_NUM_THREADS=1 $(BIN)/torchrun --standalone --nproc_per_node $(NPROC) roots_scale/pretrain.py \
	--config configs/tiny_gpt.yaml data.path=$(DEMO)/store run.output_dir=$(DEMO)/tiny_gpt \
	train.exit_interval=20
FINETUNE := OMP_NUM_THREADS=1 $(BIN)/torchrun --standalone --nproc_per_node $(NPROC) -m roots_scale.finetune \
	--config configs/finetune_classify.yaml finetune.init=$(DEMO)/tiny_gpt run.output_dir=$(DEMO)/finetune_source \
	finetune.train_path=$(DEMO)/labels/train.jsonl finetune.valid_path=$(DEMO)/labels/valid.jsonl

.PHONY: setup demo demo-finetune test test-fast lm-eval clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "torch==2.13.0" $(TORCH_PIP_ARGS)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	@echo "== 1/7 built-in corpus: a MediaWiki XML dump and a Common Crawl-style WARC"
	$(BIN)/roots-data demo-corpus --output $(DEMO)/raw
	@echo "== 2/7 extract documents (main text of HTML pages, plain text of wiki pages)"
	$(BIN)/roots-data extract --format wikipedia --output $(DEMO)/docs $(DEMO)/raw/wikipedia/demowiki-pages-articles.xml.bz2
	$(BIN)/roots-data extract --format warc --output $(DEMO)/docs $(DEMO)/raw/commoncrawl/demo.warc.gz
	@echo "== 3/7 clean: normalize, identify languages, ROOTS quality filters, redact PII"
	$(BIN)/roots-data clean --input $(DEMO)/docs --output $(DEMO)/clean
	@echo "== 4/7 deduplicate: exact and MinHash near-duplicates across all shards"
	$(BIN)/roots-data dedup --input $(DEMO)/clean --output $(DEMO)/dedup
	@echo "== 5/7 train a sentencepiece tokenizer"
	$(BIN)/roots-data train-tokenizer --input $(DEMO)/dedup --output $(DEMO)/tokenizer/spm --vocab-size 2000
	@echo "== 6/7 tokenize into the Arrow token store"
	$(BIN)/roots-data tokenize --input $(DEMO)/dedup --tokenizer $(DEMO)/tokenizer/spm.model --output $(DEMO)/store
	$(BIN)/roots-data verify $(DEMO)/store
	@echo "== 7/7 train a tiny GPT on $(NPROC) CPU processes (gloo, ZeRO-1)"
	rm -rf $(DEMO)/tiny_gpt
	@echo "-- first run: stops after step 20 with a checkpoint, as a preempted job would"
	$(TRAIN)
	@echo "-- the same command again: resumes from the checkpoint and finishes"
	$(TRAIN)
	@echo ""
	@echo "Demo complete. Everything is under $(DEMO)/:"
	@echo "  raw/        the built-in corpus (MediaWiki XML dump, WARC)"
	@echo "  docs/       extracted document shards (Parquet), then clean/ and dedup/ (each with stats.json)"
	@echo "  tokenizer/  sentencepiece model"
	@echo "  store/      Arrow token store + manifest.json"
	@echo "  tiny_gpt/   the run: config.yaml, checkpoints/, metrics.jsonl, tensorboard/"
	@echo "Open tensorboard with: $(BIN)/tensorboard --logdir $(DEMO)/tiny_gpt/tensorboard"

# After pretraining: the demo's tiny GPT fine-tuned to tell which source (Wikipedia or Common Crawl) a passage of
# the built-in corpus came from, then its best checkpoint evaluated (runs `make demo` first if it has not run).
demo-finetune: setup
	@test -f $(DEMO)/tiny_gpt/checkpoints/latest || $(MAKE) demo DEMO=$(DEMO)
	@echo "== 1/3 labelled passages from the built-in corpus: the source each came from"
	$(BIN)/roots-data make-labels --input $(DEMO)/dedup --label source --split-by passage --output $(DEMO)/labels
	@echo "== 2/3 fine-tune the tiny GPT as a classifier (last-token head) on $(NPROC) CPU processes"
	rm -rf $(DEMO)/finetune_source
	$(FINETUNE)
	@echo "== 3/3 the best checkpoint (checkpoints/best.json) on the held-out passages"
	$(BIN)/roots-train evaluate $(DEMO)/finetune_source/checkpoints/$$($(BIN)/python -c "import json, sys; \
		print(json.load(open(sys.argv[1]))['tag'])" $(DEMO)/finetune_source/checkpoints/best.json) \
		--data $(DEMO)/labels/valid.jsonl --json $(DEMO)/finetune_source/evaluation.json

test: setup
	@$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then \
		if [ -n "$(PYTEST_ARGS)" ]; then echo "make test: no test matched PYTEST_ARGS=$(PYTEST_ARGS)"; exit 0; fi; \
		echo "make test: pytest collected no tests: the suite is missing"; exit 1; \
	fi; exit $$rc

test-fast: setup
	$(BIN)/python -m pytest -m "not slow" -q $(PYTEST_ARGS)

# lm-evaluation-harness on a run's latest checkpoint (default: the demo's, on the task shipped in the package);
# results go to $(RUN)/lm_eval/. E.g. make lm-eval RUN=runs/gpt2 TASKS=roots_python_stdlib,hellaswag LM_EVAL_ARGS="--limit 100"
RUN ?= $(DEMO)/tiny_gpt
TASKS ?= roots_python_stdlib
LM_EVAL_ARGS ?=
lm-eval: setup
	$(BIN)/roots-train lm-eval $(RUN) --tasks $(TASKS) $(LM_EVAL_ARGS)

clean:
	rm -rf runs .pytest_cache
