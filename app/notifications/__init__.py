"""Expiry notices (rule 5, docs/design.md): found by sweeps, kept in a transactional outbox, mailed
once."""
