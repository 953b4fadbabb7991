"""The Delta Lake ledger: tables, damage checks, what the audit vouches, the lock."""
