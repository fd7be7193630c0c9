"""Report: the token-view pages and the run record shown on the report front page."""
