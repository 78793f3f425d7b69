"""Web scale: the distilled text-only student, the confidence cascade, input shards and
streaming, resumable assignment with local processes or Ray."""
