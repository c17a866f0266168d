"""Imagination: the text-to-audio generators (Stable Audio, the planted tone generator) and CLAP scoring."""
