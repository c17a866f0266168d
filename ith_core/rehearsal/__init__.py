"""`ith rehearse`: the paper run rehearsed at full size on random weights (docs/rehearsal.md)."""
