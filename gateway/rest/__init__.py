"""HTTP front end: thin translators between JSON and the gateway's data and control planes."""
