"""The run report: analysis (pure derivations), plots (PNG), dag (deployment graph), modify (nodes
to modify), rows (table rows and formatting), sections, sections_resources, sections_pipeline
(the report's sections, in order) + doc (the document and its markdown/HTML), render
(``write_report``). Nothing is imported here: a verb that needs one small part (the SLO table)
must not pay for matplotlib.

Place in the flow: spec → plan → engines → measure → results → verdicts → **report**.
``history`` renders ``harness history``'s table and plot.

May import: every package above it except ``emulate`` and ``commands``.
"""
