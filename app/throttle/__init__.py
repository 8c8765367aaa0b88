"""Guessing costs the attacker, not the service (rule 12): failed attempts at a secret a caller
can guess (a password, a client secret) are counted per account or client and per source
address, shared by every replica, and slow the guesser down with blocks that grow while the
guessing goes on and end by themselves (back-off, never a permanent lockout).

- `policy`: the pure rules (how many failures in what window, how long a block).
- `store`: where counts live (PostgreSQL or SQLite, table `throttles`) and how replicas learn of
  a block at once (an in-process map, filled by NOTIFY on PostgreSQL).
"""
