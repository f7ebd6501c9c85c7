"""Alembic migrations of the ledger, shipped inside the package (``perpdesk.store:migrations``).

Apply with :func:`perpdesk.store.init_db` (or ``perpdesk init-db``). A new revision, after
changing ``perpdesk/store/models.py``::

    from alembic import command
    from perpdesk.store.ledger import alembic_config
    command.revision(alembic_config("sqlite:////tmp/x.sqlite"), "what changed", autogenerate=True)

(run ``init_db`` on that URL first so autogenerate compares against the current head).
"""
