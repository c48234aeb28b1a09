"""The two HTML reports of the rule runner: :mod:`.profiler_report` and :mod:`.xgboost_report`,
built from the pieces of :mod:`.layout` (stylesheet: ``report.css``)."""
