"""Data sources of the runner (not Hugging Face's ``datasets``: the two cannot share one environment)."""

PROJECT_DATASETS = True  # tests/test_layout.py checks this to catch the other package shadowing ours
