"""The `ith` command line: argument parsing, help, exit codes; it calls flows and stage drivers."""
