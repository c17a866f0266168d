"""The fusion language model: audio features, LM inputs, the cross-attention/gate model and its training."""
