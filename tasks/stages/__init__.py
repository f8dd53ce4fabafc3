"""The eight stages of the pipeline: pure compute under thin Prefect tasks that read and write the store."""
