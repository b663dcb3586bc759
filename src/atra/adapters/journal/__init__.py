"""The live loop's journal: an SQLite file (WAL, versioned schema) holding every signal, order,
fill, position, equity mark, cycle and guard event, written one transaction per step.

- :mod:`atra.adapters.journal.database`: :class:`Journal` (open and migrate, write, read).
- :mod:`atra.adapters.journal.records`: the records it stores and :class:`JournalBatch`.
- :mod:`atra.adapters.journal.schema`: the migrations and the SQL statements.

May import what :mod:`atra.adapters` may.
"""
