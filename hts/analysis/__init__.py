"""After a run: count tables, quality control, the HTML report and ``hts.open_results``."""
