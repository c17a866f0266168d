"""The run report and the pipeline's Markdown summaries: loading (a run folder's results, summary and
stage outputs), tables (tables and page sections), charts (matplotlib SVG), rendering (HTML/Markdown
assembly, write_report) and summaries (every published Markdown summary, the profile statement)."""
