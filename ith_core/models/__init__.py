"""Model roles: the tiny and paper profiles, the offline tiny builders, model identity, the span detector."""
