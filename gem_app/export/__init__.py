"""The canonical mixture document (JSON Schema in ``mixture.schema.json``), the domains it is
built on, the training-stack formats and materialized shards."""
