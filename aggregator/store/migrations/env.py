"""Alembic environment: runs on the connection the store hands over (never reads an ini URL)."""

from alembic import context

from aggregator.store.tables import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
