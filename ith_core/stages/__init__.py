"""Stage drivers: one module per stage family, named as its Prefect tasks are; each reads and writes the run folder through `storage`."""
