"""Human review of generated images (D3S's MTurk step, on a server the team owns).

Data flow: a generation output (shards) → :mod:`selection` picks the images to review → raters vote in the
web app (:mod:`app`; tasks from :mod:`assignment`, votes in :mod:`voting`) → :mod:`decisions` applies the
veto rule and exports ``<output>/review/accepted.parquet`` → readers keep only those ids when asked
(``review: accepted``, :func:`ffr.datasets.reviewed.accepted_ids`).

Modules: ``db`` (tables, engine, private SQLite files), ``migrations`` (Alembic), ``store`` (settings, raters,
revocation), ``tokens`` (invite/admin/session tokens, CSRF), ``sessions`` (sign-in), ``origins`` and
``middleware`` (the origin check and security headers on every request), ``images`` (byte-offset index over
the shards, guides, references), ``progress``, ``command`` (CLI glue). What is protected, and how:
docs/review.md.
"""
