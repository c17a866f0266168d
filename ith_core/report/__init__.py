"""The run report: loading a run's results, tables, charts and rendering to Markdown/HTML."""
