"""Scoring predictions: accuracies, bootstrap intervals, paired comparisons, the published table."""
