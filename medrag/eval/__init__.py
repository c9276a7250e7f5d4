"""`medrag eval`: reproducible runs over retrieval and QA datasets, with sanity baselines."""
