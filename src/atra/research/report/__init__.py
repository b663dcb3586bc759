"""Run reports: one self-contained HTML file (plotly) and a rich table for the terminal.

Modules: :mod:`~atra.research.report.tables` (the metrics, costs, per-symbol, what-was-run
tables and the liquidation sentences, as formatted text), :mod:`~atra.research.report.figures`
(the plotly figures) and :mod:`~atra.research.report.page` (the HTML page,
:func:`~atra.research.report.page.render_report`, and
:func:`~atra.research.report.page.terminal_summary`); :mod:`~atra.research.report.search_page`
renders the search page of ``atra search --html`` from plain figures (assembled by
:mod:`atra.research.search_html`).

May import: :mod:`atra.core`, :mod:`atra.errors` and :mod:`atra.research.runrecord`.
"""
