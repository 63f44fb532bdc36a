"""Policies: eligibility, contact rules, consent, quiet hours, budgets, and the safe expression
language they are written in. Pure: no Ray, no I/O."""
