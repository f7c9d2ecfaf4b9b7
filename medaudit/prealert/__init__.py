"""Pre-alert (事前提醒): check a doctor's new orders before they are charged.

The hospital system sends what the national 3101 interface sends (the patient, the visit, its
diagnoses, the visit's earlier orders and the new ones) and gets back, at once, the rules the
new orders would break; the doctor's answer comes back as a 3103 feedback and is shown later as
evidence on the matching post-hoc finding.

There is ONE definition of a rule's meaning: the rule types' own set-based SQL
(:mod:`medaudit.types`). :mod:`.sql_path` builds a tiny ``lines`` for one request with the very
engine code batch screening uses (:func:`medaudit.engine.prepare_lines` over the request's
context tables, handed by name) and runs the same compiled type queries over it;
:mod:`.events` (durable-rules, or the same rules in plain Python where it does not load) routes each request only to the rule types whose items its
orders touch and handles the feedback events; :mod:`.store` keeps results, feedback and the
institutions' API keys; :mod:`.app` is the FastAPI service (``medaudit serve``).

:mod:`.fast` answers the same question in memory for the rule types it has an evaluator for
(a transcription of the type's query), tested against this SQL path and batch screening.
:mod:`.checker` dispatches: per rule type, the fast path or the SQL path, in the same request
(``medaudit serve --engine fast|sql``; each answer names its paths in the ``X-Medaudit-Engine``
header: ``fast``, ``sql`` or ``fast+sql``). Both paths give the hits and alerts of :mod:`.alerts`.
"""
