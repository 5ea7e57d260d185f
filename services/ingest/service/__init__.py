"""Ingest logic, by domain: sites and keys (`sites`), drug-checking results
(`drug_checks`), overdose reports (`reports`), a site's own submissions (`submissions`),
CSV uploads (`csv_upload`); `common` holds the caller and outcome types they share.

Functions take a session and never commit: the caller's unit of work does. Callers import
a name from the module that defines it.
"""
