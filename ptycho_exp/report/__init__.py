"""Presenting an aggregated study: figures, the comparison panels, the Markdown summary and the HTML report."""
