"""One module per schema change, applied in order by ``gateway.database.engine``."""
