"""Supervision over time (issue 13): the annual assessment (年度考核, 一票否决), credit files
(信用档案) and the watchlist (重点监控). Same DuckDB file as the hospital loop; every command
is one transaction and appends to ``supervision_events`` (who, when, why)."""
