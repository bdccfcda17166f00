"""Reading job folders and computing from them: the job table, status, per-group tables, findings, ensembles."""
