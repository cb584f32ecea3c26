# Two commands set everything up on a fresh machine:  make demo   and   make test
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DEMO_DATA := demo_data
DEMO_RUN := runs/demo

.PHONY: demo test install lint bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt -e ".[labels,storage,screen,tune,dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	test -f $(DEMO_DATA)/datasets.yaml || $(VENV)/bin/atomgfm data demo --out $(DEMO_DATA)
	$(VENV)/bin/atomgfm train configs/demo.yaml
	$(VENV)/bin/atomgfm evaluate $(DEMO_RUN)/best.pt --out $(DEMO_RUN)/eval

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

bench: $(STAMP)
	$(PY) benchmarks/throughput.py
	$(PY) benchmarks/train_step.py

clean:
	rm -rf $(DEMO_RUN) $(DEMO_DATA)
