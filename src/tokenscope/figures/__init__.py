"""Figures: a shared style and one module per figure family."""

import matplotlib

matplotlib.use("Agg")  # files only: no display in workflow jobs, set before anything imports pyplot
