"""AudioBERT's side: the clip pool, its index and queries, and the AudioBERT model."""
