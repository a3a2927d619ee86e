"""Golden answers: every endpoint's JSON on the test dataset, captured once, compared byte for byte.

The dataset (``service.demo.generate`` with the suite's seed and size) is deterministic and the
service answers identically on every database, so one capture serves all three. A refactor must
not change a byte of it; a change that means to alter answers regenerates it on purpose:

    .venv/bin/python -m tests.golden capture   # writes tests/golden/answers.json

The request set is derived from the data itself (every assessment name, tool, tag key and
dimension the discovery endpoints report) so a new name in the dataset is covered without
editing this file.
"""
