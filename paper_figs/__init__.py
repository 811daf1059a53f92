"""Paper figures: one script per figure, driven by ``python -m paper_figs``."""
