"""Data: data sets and their download, preprocessing fitted on a training split, batches."""
