"""Expiry notices (rule 5 of DESIGN.md): found by sweeps, kept in a transactional outbox, mailed
once."""
